"""Skills: named instructions an organization gives its agent for one turn (`send_message`'s
`skill`), optionally narrowing the tools the model may use.

A skill is data (`parley skill ...`, `PUT /admin/skills/{name}`), stored per organization;
a turn carries only its name, and each model call reads it. An unknown skill is refused by
the gateway before anything is stored or started (`SKILL_NOT_FOUND`): a turn that silently
ran without the instructions it asked for would look exactly like one that followed them.

The built-in tools stay offered whatever a skill's list says: `knowledge_search` (answers stay
grounded), the rich-interaction raise tools (the protocol offers them always) and
`escalate_to_human` (no skill may stop the agent from handing over to a person).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_PROMPT_CHARS = 20_000
MAX_TOOLS = 100

BUILT_IN_TOOLS: frozenset[str] = frozenset(
    {"knowledge_search", "request_identity_intake", "request_choices", "escalate_to_human"}
)

_NAME = re.compile(NAME_PATTERN)


def valid_name(name: str) -> bool:
    """A skill (or tool) name: 1-128 ASCII letters, digits, `_` and `-`."""
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True)
class Skill:
    name: str
    prompt: str  # added to the system prompt
    tools: tuple[str, ...] | None = None  # the tools it may use; None: all

    def allows(self, tool: str) -> bool:
        """Whether the model may be offered (and may call) `tool` under this skill."""
        return self.tools is None or tool in self.tools or tool in BUILT_IN_TOOLS

    def instructions(self) -> str:
        """The skill as a system prompt block."""
        return (
            f'This turn runs the skill "{self.name}" (set by the application, not written by'
            f" the person). Follow its instructions:\n\n{self.prompt}"
        )
