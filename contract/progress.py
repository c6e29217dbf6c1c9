"""tqdm progress for long steps, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Callable, Optional

from tqdm import tqdm


def bar(desc: str, enabled: Optional[bool] = None) -> "ByteBar":
    """A (done, total) byte-progress callback; a no-op when not on a TTY."""
    return ByteBar(desc, sys.stderr.isatty() if enabled is None else enabled)


class ByteBar:
    """Callable progress(done, total) backed by a tqdm bar; use as a context manager."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self._bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                         disable=not enabled, file=sys.stderr)

    def __call__(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> "ByteBar":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()


ProgressFn = Callable[[int, int], None]
