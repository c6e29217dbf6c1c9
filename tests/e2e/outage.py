"""A continuous probe for the e2e tests: samples a check every interval while something runs, and measures
the longest outage.

A probe that stops at the moment the watched change ends would see an outage that began in its last sample
as "still down" (or not at all), so the sampler keeps going after `stop` until the check passes again, up
to `settle` seconds: the outage that the change caused is measured to its end.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Sampler:
    """`with Sampler(check) as s: ...` samples `check()` in a thread (`up(value)` says the watched thing is
    up); `s.samples` holds (monotonic time, value) pairs."""

    def __init__(self, check: Callable[[], Any], interval: float = 0.2, settle: float = 20.0,
                 up: Callable[[Any], bool] = bool) -> None:
        self.check, self.interval, self.settle, self.up = check, interval, settle, up
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = None
        while True:
            value = self.check()
            self.samples.append((time.monotonic(), value))
            if self._stop.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self.settle
                if self.up(value) or time.monotonic() > deadline:
                    return
            time.sleep(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.settle + 30)


def longest_outage(samples, up: Callable[[Any], bool] = bool) -> tuple[float, float | None]:
    """(the longest run of failed samples in seconds, the time the last outage began if it never ended)."""
    worst, down_since = 0.0, None
    for at, value in samples:
        if not up(value) and down_since is None:
            down_since = at
        elif up(value) and down_since is not None:
            worst, down_since = max(worst, at - down_since), None
    return worst, down_since
