"""Who is on a connection: a principal, read from a verified token's claims.

A principal owns the sessions it creates (only its own connections may use them), sets the
session's organization, and is the knowledge requester (its user id and groups). A
connection without one is anonymous: its sessions are bearer capabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_CLAIM = 256  # sub, org, role, name, email
MAX_GROUPS = 100
MAX_GROUP = 128


class InvalidClaims(ValueError):
    """The token verified but its claims cannot name a principal."""


@dataclass(frozen=True)
class Principal:
    subject: str
    org: str
    roles: tuple[str, ...] = ()
    # None: the token says nothing about groups (the admin-set groups apply).
    groups: tuple[str, ...] | None = None
    name: str | None = None
    email: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """`sub`, `org` (or `org_id`), `role` (a string or a list), `groups`, `name`, `email`."""
        subject = _text(claims.get("sub"), "sub")
        org = claims.get("org", claims.get("org_id"))
        if org is None:
            raise InvalidClaims("the token names no organization ('org' or 'org_id')")
        groups = claims.get("groups")
        return cls(
            subject=subject,
            org=_text(org, "org"),
            roles=_texts(claims.get("role"), "role", MAX_GROUPS),
            groups=None if groups is None else _texts(groups, "groups", MAX_GROUPS),
            name=_optional_text(claims.get("name"), "name"),
            email=_optional_text(claims.get("email"), "email"),
        )

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def owns(self, owner_org: str | None, owner_subject: str | None) -> bool:
        """True when a session recorded with this owner is this principal's."""
        return (owner_org, owner_subject) == (self.org, self.subject)


def _text(value: Any, claim: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidClaims(f"claim '{claim}' must be a non-empty string")
    if len(value) > MAX_CLAIM or "\x00" in value:
        raise InvalidClaims(f"claim '{claim}' is too long or not text")
    return value


def _optional_text(value: Any, claim: str) -> str | None:
    return None if value is None else _text(value, claim)


def _texts(value: Any, claim: str, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > limit:
        raise InvalidClaims(f"claim '{claim}' must be a string or a list of at most {limit}")
    out = tuple(_text(item, claim) for item in items)
    if any(len(item) > MAX_GROUP for item in out):
        raise InvalidClaims(f"an entry of claim '{claim}' is longer than {MAX_GROUP}")
    return out
