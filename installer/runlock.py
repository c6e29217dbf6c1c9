"""One run that writes the state directory at a time: an OS lock on <state>/lock, held for the whole run.

The lock is an flock(2) on the file, not the file itself: the kernel drops it when the holding process ends,
however it ends (SIGKILL included), so a lock file left behind by a dead run is no lock and the next run
simply takes it. Once the lock is held, the file is rewritten in place (never renamed: that would replace
the locked inode) with who holds it, as JSON: pid, host, started (UTC) and the command; a run that finds
the lock taken reads that record and refuses at once, naming the holder. The descriptor is opened
close-on-exec, so children (ssh ControlMaster processes that outlive the run) never keep the lock alive.

Read-only commands (`plan`, `check`, `certs check`) do not take it and may run alongside.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from contract.errors import Error

LOCK_FILE = "lock"
RECORD_WAIT = 1.0  # a holder writes its record right after taking the lock: wait this long for it


class StateLocked(Error):
    """Another run holds the state directory's lock; `holder` is its record (empty when unreadable)."""

    def __init__(self, message: str, *, holder: dict, **kw) -> None:
        super().__init__(message, **kw)
        self.holder = holder


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def lock_path(state_root: Path) -> Path:
    return Path(state_root) / LOCK_FILE


def read_holder(path: Path) -> dict:
    """The record in a lock file ({} when missing, empty or not JSON)."""
    try:
        data = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its record yet)"
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" (installer {holder['command']})" if holder.get("command") else ""))


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def _refusal(path: Path, command: str, sleep: Callable[[float], None]) -> StateLocked:
    holder = read_holder(path)
    waited = 0.0
    while not holder and waited < RECORD_WAIT:  # taken a moment ago: its record follows at once
        sleep(0.05)
        waited += 0.05
        holder = read_holder(path)
    return StateLocked(
        f"the state directory {path.parent} is in use by {_describe(holder)}",
        holder=holder, context=f"starting installer {command}",
        hint=f"wait for that run to finish (or stop it) and run {command} again; only one apply, add-node, "
             f"remove-node, certs renew, etcd snapshot, render or seed may use a state directory at a time (plan and check may run "
             f"alongside). The lock ends with its process: {path} without a live holder is no lock")


@contextmanager
def hold(state_root: Path, command: str, *, clock: Callable[[], dt.datetime] = _utcnow,
         sleep: Callable[[float], None] = time.sleep) -> Iterator[dict]:
    """Hold <state>/lock for the body, or raise StateLocked at once naming the holder. Yields our record."""
    root = Path(state_root)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = lock_path(root)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise Error(f"cannot open the lock of the state directory {root}: {e.strerror}",
                    context=f"starting installer {command}",
                    hint="pass a --state directory this user may write (root's is /var/lib/k8s-offline)") from None
    try:
        if not _try_flock(fd):
            raise _refusal(path, command, sleep)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": clock().replace(microsecond=0).isoformat(), "command": command}
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        try:
            yield record
        finally:
            os.ftruncate(fd, 0)  # still held: nobody reads a record of a run that has ended
    finally:
        os.close(fd)  # releases the flock


__all__ = ["LOCK_FILE", "StateLocked", "hold", "lock_path", "read_holder"]
