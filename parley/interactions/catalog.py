"""The kinds of rich interaction Parley offers, by wire name and by raise tool.

The workflow reads `RAISE_TOOLS` to tell a raise tool's call from any other: keep it a plain
constant (deterministic).
"""

from __future__ import annotations

from parley.interactions.choices import CHOICES
from parley.interactions.identity import IDENTITY_INTAKE
from parley.interactions.kinds import Kind

KINDS: tuple[Kind, ...] = (IDENTITY_INTAKE, CHOICES)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
BY_TOOL: dict[str, Kind] = {k.tool: k for k in KINDS}
RAISE_TOOLS: frozenset[str] = frozenset(BY_TOOL)
