"""sha256 sums of the executables extracted into the state directory, kept next to them with each file's identity.

Every run (a converged re-apply, plan) needs the sum of every extracted executable for the desired state; at
release size that is about 700 MB to hash on each run. The sums are kept in `.sums.json` in the extraction
directory (0600) with the identity of the file they were computed from: device, inode, size, mtime and ctime in
nanoseconds. A file whose identity is unchanged gets its recorded sum; any other is hashed again. The rule is
the hosts' facts hash cache's (installer/facts_hashes.py): any write to a file moves its ctime, which user space
cannot set back (utimensat resets mtime only), and a replaced file has a new inode; a file changed less than
RACY_SECONDS before is hashed and not recorded (a write in the same clock tick would not move the ctime); the
stat comes before the hash; an unreadable or garbled record means "hash it".
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, List

from contract.digest import sha256_file

RACY_SECONDS = 2
NAME = ".sums.json"


def identity(st: os.stat_result) -> List[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]



class Sums:
    """The recorded sums of one directory's files; sha256(path) answers from them when the identity is the same."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(directory) / NAME
        self.clock = clock
        self.hashed: List[str] = []  # names hashed by this instance (the others came from the record)
        self._changed = False
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        self._data: Dict[str, dict] = data if isinstance(data, dict) else {}

    def sha256(self, path: Path) -> str:
        path = Path(path)
        st = os.stat(path)
        rec = self._data.get(path.name)
        if isinstance(rec, dict) and rec.get("id") == identity(st) and _hexdigest(rec.get("sha256")):
            return rec["sha256"]
        digest = sha256_file(path)
        self.hashed.append(path.name)
        if st.st_ctime_ns / 1e9 <= self.clock() - RACY_SECONDS:
            self._data[path.name] = {"id": identity(st), "sha256": digest}
        else:
            self._data.pop(path.name, None)
        self._changed = True
        return digest

    def save(self) -> None:
        """Write the record when it changed (a temp file renamed into place); a failure only costs hashing."""
        if not self._changed:
            return
        tmp = self.path.with_name(f"{NAME}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self._data, f, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._changed = False


def _hexdigest(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)
