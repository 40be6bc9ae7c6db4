"""The sweep of lost work, as one loop: a daemon thread of every generate and default worker
(``annotator.tasks``). Each sweep ends the items whose worker's heartbeat is gone (annotator/sweep.py):
generations (``generation.TraceSweep``), snapshot builds (``snapshots.SnapshotSweep``) and sets of
alternatives (``alternatives.AlternativesSweep``); and it sends again the task of work whose message
was lost (``waiting.WaitingSweep``)."""

from __future__ import annotations

import logging
import threading

from annotator.services.alternatives import AlternativesSweep
from annotator.services.generation import TraceSweep
from annotator.services.snapshots import SnapshotSweep
from annotator.services.waiting import WaitingSweep

log = logging.getLogger(__name__)


def sweep_forever(*, interval_s: float, grace_s: float, stop: threading.Event | None = None) -> None:
    """The sweep as a loop (a daemon thread of every generate and default worker): a round every
    ``interval_s`` ends lost generations (``TraceSweep``), lost snapshot builds
    (``annotator.services.snapshots.SnapshotSweep``) and lost alternatives
    (``annotator.services.alternatives.AlternativesSweep``), all with ``grace_s``, and sends the task
again of work that waits too long (``annotator.services.waiting.WaitingSweep``); a sweep that fails
    (database or Redis away) is logged and the next round tries again. Each sweep fails alone: a
    snapshot sweep that fails does not keep traces from being swept, nor the other way round."""
    from django.db import close_old_connections

    sweeps = {"lost generations": TraceSweep(grace_s=grace_s), "lost snapshot builds": SnapshotSweep(grace_s=grace_s),
              "lost alternatives": AlternativesSweep(grace_s=grace_s), "waiting work": WaitingSweep()}
    stop = stop or threading.Event()
    while not stop.wait(interval_s):
        close_old_connections()
        for what, sweep in sweeps.items():
            try:
                sweep.run_once()
            except Exception:
                log.warning("sweep of %s failed; trying again in %.0f s", what, interval_s, exc_info=True)
