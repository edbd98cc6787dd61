"""Waking the desk's long polls when an organization's pending approvals change.

PostgreSQL NOTIFYs an organization's id on `parley_approvals` whenever one of its approvals
is asked, decided, expired, cancelled or extended (a trigger, migration 0015); the
gateway's one listening connection (`gateway.live`) hands each to `changed`, which wakes
that organization's waiting polls. A woken poll reads the database again, so a notification
is only a hint: a missed one costs a wait (the poll's own timeout, the page's slow poll),
never a wrong answer.

Waits are bounded per principal and per client address: each holds an open request (never
a database connection), and one desk tab needs one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

MAX_WAITS_PER_PRINCIPAL = 4  # a few tabs of the same person
MAX_WAITS_PER_ADDRESS = 32  # a team behind one office address


class ApprovalWatch:
    def __init__(
        self,
        per_principal: int = MAX_WAITS_PER_PRINCIPAL,
        per_address: int = MAX_WAITS_PER_ADDRESS,
    ) -> None:
        self._limits = {"principal": per_principal, "address": per_address}
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._open: Counter[tuple[str, str]] = Counter()

    def changed(self, org: str) -> None:
        """The organization's approvals changed: wake its waiting polls."""
        for event in self._waiting.get(org, ()):
            event.set()

    def changed_everywhere(self) -> None:
        """Anything may have changed (the listener was down): wake every waiting poll."""
        for events in self._waiting.values():
            for event in events:
                event.set()

    @contextmanager
    def admit(self, principal: str, address: str) -> Iterator[bool]:
        """One more wait for this principal and client address; yields False (and counts
        nothing) when either already has as many as allowed."""
        keys = [("principal", principal), ("address", address)]
        if any(self._open[key] >= self._limits[key[0]] for key in keys):
            yield False
            return
        self._open.update(keys)
        try:
            yield True
        finally:
            self._open.subtract(keys)
            for key in keys:
                if self._open[key] <= 0:
                    del self._open[key]

    @contextmanager
    def subscribe(self, org: str) -> Iterator[asyncio.Event]:
        """An event set whenever the organization's approvals change, while inside."""
        event = asyncio.Event()
        self._waiting.setdefault(org, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting[org]
            events.discard(event)
            if not events:
                del self._waiting[org]

    def waiting(self) -> int:
        """Polls waiting now (for tests and metrics)."""
        return sum(len(events) for events in self._waiting.values())
