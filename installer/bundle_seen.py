"""Not re-reading an unchanged bundle on every run: the bundle file's identity at its last full verification.

Apply reuses the bundle unpacked in the state directory when the bundle's signed manifest is the one unpacked
(its signature is checked on every run: it is read from the bundle's head, a few KB). It then verified the whole
bundle again, every member's hash: at release size more than a GB decompressed and hashed on every converged
re-apply, although nothing of the bundle file is used (the unpacked copy, verified when it was unpacked, is).
So the full verification records the file's identity (device, inode, size, mtime and ctime in nanoseconds) and
the key that verified it; a later run with the same identity and the same key skips the full pass. Any write to
the file moves its ctime, which user space cannot set back, and a file replaced by another has a new inode: a
changed byte is verified again (and refused). A file changed less than RACY_SECONDS before it was verified is
not recorded; split bundles (several files) are always verified in full.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, List, Optional

from contract.bundle.verify import VerifyReport

RACY_SECONDS = 2
KEY = "verified_file"  # in the state directory's bundle.json


def identity(path: Path) -> Optional[List[int]]:
    """The identity of a single-file bundle, or None (missing, not a regular file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not Path(path).is_file() or not str(path).endswith(".tar.zst"):
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def remembered(info: dict, path: Path, key_fingerprint: str) -> Optional[VerifyReport]:
    """The report of the last full verification of this very file with this key, or None (verify it again)."""
    rec = info.get(KEY)
    ident = identity(path)
    if not isinstance(rec, dict) or ident is None or rec.get("identity") != ident:
        return None
    report = rec.get("report")
    if not isinstance(report, dict) or report.get("fingerprint") != key_fingerprint:
        return None
    try:
        fields = {f.name for f in dataclasses.fields(VerifyReport)}
        return VerifyReport(**{k: tuple(v) if isinstance(v, list) else v for k, v in report.items() if k in fields})
    except TypeError:
        return None


def remember(info: dict, path: Path, report: VerifyReport, clock: Callable[[], float] = time.time) -> dict:
    """info with the identity of the file just verified in full (unless it changed too recently to tell)."""
    out = {k: v for k, v in info.items() if k != KEY}
    ident = identity(path)
    if ident is not None and ident[4] / 1e9 <= clock() - RACY_SECONDS:
        out[KEY] = {"identity": ident, "report": dataclasses.asdict(report)}
    return out
