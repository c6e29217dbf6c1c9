"""Where artifacts come from (http, rpm, images), and the progress sink they all report to."""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, Optional, Union


class Progress:
    """Receives download events; the base class ignores them (tests and --json use this or a callback)."""

    def begin(self, label: str, items: int, total_bytes: Optional[int] = None) -> None:
        """A batch of `items` downloads starts (total_bytes when known)."""

    def start(self, name: str, size: Optional[int]) -> None:
        """One artifact starts downloading (size when known)."""

    def update(self, name: str, nbytes: int) -> None:
        """`nbytes` more bytes of an artifact arrived."""

    def finish(self, name: str, cached: bool) -> None:
        """One artifact is in the cache (cached: it was there already, nothing was fetched)."""

    def end(self) -> None:
        """The batch is over."""


class CallbackProgress(Progress):
    """Forwards every event to `fn(event, **fields)`, e.g. to record them in a test."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()  # downloads report from worker threads

    def _emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            self._fn(event, **fields)

    def begin(self, label: str, items: int, total_bytes: Optional[int] = None) -> None:
        self._emit("begin", label=label, items=items, total_bytes=total_bytes)

    def start(self, name: str, size: Optional[int]) -> None:
        self._emit("start", name=name, size=size)

    def update(self, name: str, nbytes: int) -> None:
        self._emit("update", name=name, nbytes=nbytes)

    def finish(self, name: str, cached: bool) -> None:
        self._emit("finish", name=name, cached=cached)

    def end(self) -> None:
        self._emit("end")


class TqdmProgress(Progress):
    """One overall bar per batch plus one bar per running download; silent when not on a terminal."""

    def __init__(self, stream: Any = None, disable: Optional[bool] = None) -> None:
        self._stream = stream or sys.stderr
        if disable is None:
            disable = not (_isatty(sys.stdout) and _isatty(self._stream))
        self.disabled = disable
        self._lock = threading.Lock()
        self._overall: Any = None
        self._bars: Dict[str, Any] = {}

    def begin(self, label: str, items: int, total_bytes: Optional[int] = None) -> None:
        if self.disabled:
            return
        from tqdm import tqdm

        with self._lock:
            self._overall = tqdm(total=items, desc=label, unit="file", file=self._stream, leave=True)

    def start(self, name: str, size: Optional[int]) -> None:
        if self.disabled:
            return
        from tqdm import tqdm

        with self._lock:
            self._bars[name] = tqdm(total=size, desc=_short(name), unit="B", unit_scale=True,
                                    unit_divisor=1024, file=self._stream, leave=False)

    def update(self, name: str, nbytes: int) -> None:
        if self.disabled:
            return
        with self._lock:
            bar = self._bars.get(name)
            if bar is not None:
                bar.update(nbytes)

    def finish(self, name: str, cached: bool) -> None:
        if self.disabled:
            return
        with self._lock:
            bar = self._bars.pop(name, None)
            if bar is not None:
                bar.close()
            if self._overall is not None:
                self._overall.update(1)

    def end(self) -> None:
        if self.disabled:
            return
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._overall is not None:
                self._overall.close()
                self._overall = None


ProgressLike = Union[Progress, Callable[..., Any], None]


def as_progress(progress: ProgressLike) -> Progress:
    """Accept a Progress, a callback `fn(event, **fields)` or None (no output)."""
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return CallbackProgress(progress)
    raise TypeError(f"not a progress sink: {progress!r}")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _short(name: str, width: int = 40) -> str:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base if len(base) <= width else "…" + base[-(width - 1):]
