"""Progress of long work as log lines: count done, rate, and ETA when the total is known.

Why not tqdm or rich: both draw a bar on a terminal, rewriting one line with carriage
returns. The jobs run as Airflow tasks (and under spark-submit), whose logs are files read
after the fact, so what they need is a plain ``logging`` line every so often, through the
task's own logger, with the rate and the time left. That is all this class does.
"""

from __future__ import annotations

import logging
import time


class Progress:
    """Logs ``what``: ``done[/total] unit``, ``unit``/s and ``eta`` at most every ``every_s`` seconds.

    Call ``add(n)`` after each chunk of work (``n`` units more) and ``done()`` once at the end
    (which always logs, and returns the elapsed seconds). ``total`` None: no ETA.
    """

    def __init__(self, what: str, total: int | None = None, unit: str = "rows", every_s: float = 30.0,
                 logger: logging.Logger | None = None) -> None:  # fmt: skip
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.log = logger or logging.getLogger(__name__)
        self.count = 0
        self.started = self.logged = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.logged >= self.every_s:
            self.logged = now
            self._log(now)

    def done(self) -> float:
        now = time.monotonic()
        self._log(now, final=True)
        return now - self.started

    def line(self, now: float | None = None, final: bool = False) -> str:
        """The text of one progress line (``now``: a ``time.monotonic()`` reading)."""
        elapsed = max((time.monotonic() if now is None else now) - self.started, 1e-9)
        rate = self.count / elapsed
        done = f"{self.count:,}" if self.total is None else f"{self.count:,}/{self.total:,}"
        text = f"{self.what}: {done} {self.unit}, {rate:,.0f} {self.unit}/s"
        if final:
            return f"{text}, {elapsed:.1f}s"
        if self.total is not None:
            text += f", eta {(self.total - self.count) / max(rate, 1e-9):.0f}s"
        return text

    def _log(self, now: float, final: bool = False) -> None:
        self.log.info("%s", self.line(now, final))
