"""A fair share of the engine between the API's clients.

The server keeps at most `slots` engine requests (choices) running; the others wait here, not in the engine's
first-come queue. Each time a slot frees, it goes to the waiting client with the fewest choices running, and
within that client to its request with the fewest running (then the oldest). So a client that sends one
request of 64 choices, or many requests, does not hold back another client's single request: that one gets
the next free slot. A client is its IP address; on loopback, where every client shares 127.0.0.1, the
requests share fairly among themselves by the same rule. Nothing is preempted: a running choice keeps its
slot until it ends.

It lives in the server's event loop: `acquire` and `release` are called from that loop only.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field


@dataclass(order=True)
class _Ticket:
    key: tuple[int, int, int]  # (client's running, request's running, arrival): the smallest is served first
    client: str = field(compare=False)
    request: int = field(compare=False)
    granted: asyncio.Future = field(compare=False)


class FairShare:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self.running = 0
        self.per_client: Counter[str] = Counter()
        self.per_request: Counter[int] = Counter()
        self.waiting: list[_Ticket] = []
        self._arrivals = itertools.count()

    async def acquire(self, client: str, request: int) -> None:
        """Wait for a slot for one choice of `request` (any id unique while it runs) from `client`."""
        ticket = _Ticket((0, 0, next(self._arrivals)), client, request, asyncio.get_running_loop().create_future())
        self.waiting.append(ticket)
        self._dispatch()
        try:
            await ticket.granted
        except asyncio.CancelledError:
            if ticket.granted.done() and not ticket.granted.cancelled():
                self.release(client, request)  # granted, but its waiter went away: hand the slot on
            else:
                self.waiting.remove(ticket)
            raise

    def release(self, client: str, request: int) -> None:
        """A choice `acquire` let run has ended."""
        self.running -= 1
        self.per_client[client] -= 1
        self.per_request[request] -= 1
        if not self.per_client[client]:
            del self.per_client[client]
        if not self.per_request[request]:
            del self.per_request[request]
        self._dispatch()

    def _dispatch(self) -> None:
        while self.running < self.slots and self.waiting:
            for ticket in self.waiting:
                ticket.key = (self.per_client[ticket.client], self.per_request[ticket.request], ticket.key[2])
            ticket = min(self.waiting)
            self.waiting.remove(ticket)
            self.running += 1
            self.per_client[ticket.client] += 1
            self.per_request[ticket.request] += 1
            ticket.granted.set_result(None)
