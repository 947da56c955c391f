"""Progress a person can follow: what each long step is doing, with counts and time.

Everything goes to the logger ``recsys.progress``: Airflow shows it in the task
log, ``recsys train`` prints it (its other logging stays quiet unless ``-v``).

- :func:`step` marks one step of a run: a line when it starts, one when it ends
  with its duration;
- :class:`Ticker` reports a loop (boosting rounds, epochs, trials, user
  batches) at most every ``every_s`` seconds and once at the end, with the
  count done, the total and the elapsed time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("recsys.progress")


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log ``what`` when it starts and, with its duration, when it ends or fails."""
    start = time.perf_counter()
    log.info("%s ...", what)
    try:
        yield
    except BaseException:
        log.info("%s: failed after %s", what, _seconds(time.perf_counter() - start))
        raise
    log.info("%s: done in %s", what, _seconds(time.perf_counter() - start))


class Ticker:
    """Counts a loop and says how far it got, at most every ``every_s`` seconds.

    Args:
        what: what is counted, e.g. ``"ranker: boosting bag"``.
        total: how many there will be (``None`` when unknown).
        every_s: least seconds between two lines (the last one always shows).
    """

    def __init__(self, what: str, total: int | None = None, every_s: float = 10.0) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.done = 0
        self.start = self._last = time.perf_counter()

    def tick(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more; log when ``every_s`` passed since the last line, or at the end."""
        self.done += n
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if finished or now - self._last >= self.every_s:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            extra = f", {note}" if note else ""
            log.info("%s %d%s (%s%s)", self.what, self.done, of, _seconds(now - self.start), extra)


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f} min"
