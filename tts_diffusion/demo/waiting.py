"""The demo's own queue: first come, first served, and each waiting request knows its place.

Gradio's queue tells a waiting browser only through a small "queue 1/1" badge with an
estimate of its own. The demo lets gradio start every request at once (up to its queue
size) and holds searches here instead: at most `slots` run, the others wait in arrival
order, and a waiting request's handler can say "place 2" on the page while it waits. Bad
input is answered before a request queues, so it never waits behind a search.
"""
from __future__ import annotations

import threading
import time

from ..errors import TTSInputError


class Ticket:
    """One request's place: waiting, then running, then gone."""

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.running = False


class FairQueue:
    """At most `slots` tickets run at once; up to `max_waiting` more wait, in order."""

    def __init__(self, slots: int, max_waiting: int):
        self.slots, self.max_waiting = int(slots), int(max_waiting)
        self._cond = threading.Condition()
        self._waiting: list[Ticket] = []
        self._running = 0

    def enter(self) -> Ticket:
        """A new ticket at the back of the line (TTSInputError when the line is full)."""
        with self._cond:
            if len(self._waiting) >= self.max_waiting and self._running >= self.slots:
                raise TTSInputError(f"the server is busy: {len(self._waiting)} requests are already waiting "
                                    f"(at most {self.max_waiting}); try again in a minute")
            ticket = Ticket()
            self._waiting.append(ticket)
            self._admit()
            return ticket

    def wait(self, ticket: Ticket, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `ticket`'s turn; whether it may run now."""
        with self._cond:
            if not ticket.running:
                self._cond.wait_for(lambda: ticket.running, timeout)
            return ticket.running

    def place(self, ticket: Ticket) -> tuple[int, int]:
        """(requests ahead of `ticket`, requests running); (0, n) once it runs."""
        with self._cond:
            ahead = self._waiting.index(ticket) if ticket in self._waiting else 0
            return ahead, self._running

    def leave(self, ticket: Ticket) -> None:
        """Free the ticket's slot or place (when its run ends, or its visitor went away)."""
        with self._cond:
            if ticket.running:
                self._running -= 1
                ticket.running = False
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._admit()

    def _admit(self) -> None:
        while self._waiting and self._running < self.slots:
            self._waiting.pop(0).running = True
            self._running += 1
        self._cond.notify_all()
