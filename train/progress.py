"""Progress as a plain line every so often, for output that is not a terminal: a progress bar
there is one endless line of carriage returns, and nothing else shows for minutes. Both stages
use it (training through train/console.py's callback, the observatory's sweep directly)."""

from __future__ import annotations

import time

EVERY_S = 20.0


class Progress:
    def __init__(self, total: int, done: int = 0):
        self.total, self.every_s = total, EVERY_S
        self.first_done, self.started = done, time.perf_counter()
        self.last_line = self.started

    def due(self) -> bool:
        """True once every `every_s` seconds."""
        now = time.perf_counter()
        if now - self.last_line < self.every_s:
            return False
        self.last_line = now
        return True

    def line(self, done: int, unit: str) -> str:
        """'1,200/2,000 steps (60%), 45.3 steps/s, ETA 18s': the rate since this Progress began."""
        rate = (done - self.first_done) / max(time.perf_counter() - self.started, 1e-9)
        eta = duration((self.total - done) / rate) if rate > 0 else "unknown"
        return f"{done:,}/{self.total:,} {unit} ({done / max(self.total, 1):.0%}), {rate:.3g} {unit}/s, ETA {eta}"


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
