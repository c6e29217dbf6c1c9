"""sha256 of a file, streamed: the one helper both sides use."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Tuple, Union

CHUNK = 1 << 20


def sha256_and_size(path: Union[str, Path]) -> Tuple[str, int]:
    """(hex sha256, size in bytes) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file."""
    return sha256_and_size(path)[0]
