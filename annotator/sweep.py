"""The grace logic shared by the sweeps of lost work (generations, snapshot builds): an item is
ended only after its owner's heartbeat has been missing for ``grace_s`` on checks this sweep made
itself. A live owner sets its key again every third of its lifetime, so a key that Redis lost (a
restart) comes back before then."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class HeartbeatSweep:
    """``in_flight()``: ids of the items that claim to be worked on; ``alive(ids)``: {id: owner alive};
    ``end(id)``: end one lost item (re-checked under its row lock), True when it was ended."""

    def __init__(self, *, grace_s: float, in_flight: Callable[[], Iterable[int]],
                 alive: Callable[[list[int]], dict[int, bool]], end: Callable[[int], bool]) -> None:
        self.grace_s = grace_s
        self.in_flight, self.alive, self.end = in_flight, alive, end
        self.missing_since: dict[int, float] = {}

    def run_once(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        ids = list(self.in_flight())
        alive = self.alive(ids)
        self.missing_since = {pk: self.missing_since.get(pk, now) for pk in ids if not alive[pk]}
        due = [pk for pk, since in self.missing_since.items() if now - since >= self.grace_s]
        ended = [pk for pk in due if self.end(pk)]
        for pk in due:
            self.missing_since.pop(pk, None)
        return ended
