"""What a handler knows about the socket it serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.outbox import Outbox
from gateway.services import Services
from parley.identity import Principal

if TYPE_CHECKING:
    from gateway.relay import Relay


@dataclass
class Connection:
    id: str
    services: Services
    outbox: Outbox
    origin: str | None
    principal: Principal | None = None  # None: anonymous
    # The turns relayed to this socket, by turn id.
    relays: dict[str, Relay] = field(default_factory=dict)
    # The address limits count this client by (gateway.socket_limits.client_key).
    client_ip: str = ""

    def describe(self) -> str:
        """Who is on this socket, for audit records."""
        who = f" ({self.principal.org}/{self.principal.subject})" if self.principal else ""
        return f"connection {self.id}{who}" + (f" from {self.origin}" if self.origin else "")

    async def close(self) -> None:
        """Stop relaying (the turns themselves go on) and stop the writer."""
        for relay in list(self.relays.values()):
            await relay.stop()
        self.relays.clear()
        await self.outbox.aclose()
