"""The compressed stream on disk: one file, or plain byte-range parts plus an index of their sha256."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from contract.bundle import layout
from contract.errors import Error

PathLike = Union[str, "os.PathLike[str]"]
INDEX_FORMAT_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COPY_AGAIN = "copy the bundle's files again from the build host (or rebuild it)"
_UNITS = {
    "": 1, "B": 1,
    "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(text: Union[str, int]) -> int:
    """Bytes of a size such as '3900M', '64KiB' or '4G' (K/M/G are powers of 1000, KiB/MiB/GiB of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise Error(f"bad size {text!r}", hint="write a number with an optional unit: 3900M, 64KiB, 2G")
        value = int(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise Error(f"bad size {text!r}: must be more than 0 bytes")
    return value


@dataclass(frozen=True)
class Part:
    """One split part as the index lists it."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsIndex:
    """The index of a split bundle: the whole stream's size and sha256 and each part's."""

    bundle: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    # Signed indexes only (older ones have neither): the sha256 of the bundle's signed manifest bytes, and its
    # P-256 signer as the manifest names it (base64 DER; "" when the bundle has the Ed25519 signature only).
    manifest_sha256: str = ""
    signer_p256: str = ""

    @property
    def signed_format(self) -> bool:
        """Whether the index was written to be signed (so signature files must lie beside it)."""
        return bool(self.manifest_sha256)

    def to_bytes(self) -> bytes:
        """Stable JSON bytes."""
        doc = {
            "format_version": INDEX_FORMAT_VERSION,
            "bundle": self.bundle,
            "size": self.size,
            "sha256": self.sha256,
            "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts],
        }
        if self.manifest_sha256:
            doc["manifest_sha256"] = self.manifest_sha256
        if self.signer_p256:
            doc["signer_p256"] = self.signer_p256
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("ascii")

    def position(self, name: str) -> Optional[int]:
        """The 0-based position of the part named `name`, or None when the index lists no such part."""
        return next((i for i, p in enumerate(self.parts) if p.name == name), None)

    @classmethod
    def load(cls, path: Path) -> PartsIndex:
        """Read and validate an index file; part names must be plain files of this bundle."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise Error(f"parts index {path} does not exist",
                        hint=f"copy {path.name} along with the parts; {_COPY_AGAIN}") from None
        except OSError as e:
            raise Error(f"cannot read parts index {path}: {e}", hint=_COPY_AGAIN) from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes, path: Path) -> PartsIndex:
        """Validate the bytes of the index file at `path`."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise Error(f"cannot read parts index {path}: {e}", hint=_COPY_AGAIN) from None
        try:
            if doc["format_version"] != INDEX_FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {doc['format_version']!r}")
            index = cls(
                bundle=str(doc["bundle"]),
                size=int(doc["size"]),
                sha256=str(doc["sha256"]),
                parts=tuple(Part(str(p["name"]), int(p["size"]), str(p["sha256"])) for p in doc["parts"]),
                manifest_sha256=str(doc.get("manifest_sha256", "")),
                signer_p256=str(doc.get("signer_p256", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise Error(f"parts index {path} is malformed: {e!s}", hint=_COPY_AGAIN) from None
        expected = [layout.part_filename(index.bundle, i) for i in range(len(index.parts))]
        problems = []
        if layout.bundle_of_index(path.name) != index.bundle:
            problems.append(f"it names bundle {index.bundle!r}, not the one its file name says")
        if [p.name for p in index.parts] != expected:
            problems.append(f"parts must be named {expected[:1]}... in order")
        if not index.parts or any(p.size < 0 or not _HEX64.match(p.sha256) for p in index.parts):
            problems.append("every part needs a size >= 0 and a sha256 of 64 lowercase hex digits")
        if index.manifest_sha256 and not _HEX64.match(index.manifest_sha256):
            problems.append("manifest_sha256 must be 64 lowercase hex digits")
        if sum(p.size for p in index.parts) != index.size:
            problems.append("the parts' sizes do not add up to the total size")
        if problems:
            raise Error(f"parts index {path} is malformed", details=problems, hint=_COPY_AGAIN)
        return index


class _Writer:
    """A file-like sink for the compressed stream: one temp file, or temp parts of at most split_size bytes."""

    def __init__(self, out_dir: Path, bundle: str, split_size: Optional[int]) -> None:
        self.out_dir = out_dir
        self.bundle = bundle
        self.split_size = split_size
        self.size = 0
        self.total = hashlib.sha256()
        self.done: list[tuple[str, str, int, str]] = []  # (final name, temp path, size, sha256)
        self._file = None
        self._tmp: Optional[str] = None
        self._hash = hashlib.sha256()
        self._filled = 0
        self._open_next()

    def _open_next(self) -> None:
        final = self.bundle if self.split_size is None else layout.part_filename(self.bundle, len(self.done))
        fd, self._tmp = tempfile.mkstemp(prefix=f".{final}.", suffix=".tmp", dir=self.out_dir)
        self._file = os.fdopen(fd, "wb")
        self._final = final
        self._hash = hashlib.sha256()
        self._filled = 0

    def _close_current(self) -> None:
        assert self._file is not None and self._tmp is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.chmod(self._tmp, 0o644)
        self.done.append((self._final, self._tmp, self._filled, self._hash.hexdigest()))
        self._tmp = None

    def write(self, data) -> int:
        """Append compressed bytes, starting a new part whenever the current one is full."""
        view = memoryview(data).cast("B")
        n = len(view)
        self.total.update(view)
        self.size += n
        while len(view):
            if self.split_size is not None and self._filled == self.split_size:
                self._close_current()
                self._open_next()
            room = len(view) if self.split_size is None else min(len(view), self.split_size - self._filled)
            chunk = view[:room]
            self._file.write(chunk)
            self._hash.update(chunk)
            self._filled += room
            view = view[room:]
        return n

    def flush(self) -> None:
        """Nothing to do: parts are flushed when closed."""

    def finish(self, manifest_sha256: str = "", signer_p256: str = "",
               sign: Optional[Callable[[bytes], list[bytes]]] = None) -> tuple[Path, Optional[Path], tuple[Path, ...]]:
        """Rename temp files into place: (path to hand to the installer, index path or None, part paths).

        A split bundle's index names the manifest (manifest_sha256) and its P-256 signer; sign(index bytes)
        gives its [Ed25519, P-256] signatures (the second only with a P-256 signer), written beside it."""
        self._close_current()
        out = self.out_dir
        if self.split_size is None:
            (final, tmp, _, _), = self.done
            os.replace(tmp, out / final)
            self.done = []
            _remove_split(out, self.bundle)
            return out / final, None, ()
        index = PartsIndex(
            bundle=self.bundle,
            size=self.size,
            sha256=self.total.hexdigest(),
            parts=tuple(Part(final, size, digest) for final, _, size, digest in self.done),
            manifest_sha256=manifest_sha256,
            signer_p256=signer_p256,
        )
        index_path = out / layout.parts_index_filename(self.bundle)
        index_bytes = index.to_bytes()
        signatures = sign(index_bytes) if sign is not None else []
        sig_names = layout.parts_index_signature_filenames(self.bundle)
        for name, data in zip(sig_names, signatures):
            _write_replace(out / name, data)
        for name in sig_names[len(signatures):]:  # a P-256 signature of an earlier build must not stay
            (out / name).unlink(missing_ok=True)
        index_tmp = _write_temp(out, index_path.name, index_bytes)
        parts = []
        for final, tmp, _, _ in self.done:
            os.replace(tmp, out / final)
            parts.append(out / final)
        self.done = []
        os.replace(index_tmp, index_path)  # last, so an index only ever lists complete parts
        # A previous build of the same name must not be mistaken for part of this one.
        for stale in _existing_parts(out, self.bundle)[len(parts):]:
            stale.unlink()
        if (out / self.bundle).exists():
            (out / self.bundle).unlink()
        return index_path, index_path, tuple(parts)

    def abort(self) -> None:
        """Remove every temp file written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for tmp in [self._tmp] + [d[1] for d in self.done]:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        self._tmp = None
        self.done = []


def _write_temp(directory: Path, name: str, data: bytes) -> str:
    """A 0644 temp file beside `name` in `directory` holding `data`; its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        os.fchmod(f.fileno(), 0o644)
    return tmp


def _write_replace(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all."""
    os.replace(_write_temp(path.parent, path.name, data), path)


def _existing_parts(directory: Path, bundle: str) -> list[Path]:
    """Part files of `bundle` in `directory`, in part order."""
    found = []
    for entry in directory.iterdir():
        parsed = layout.parse_part_filename(entry.name)
        if parsed and parsed[0] == bundle:
            found.append((parsed[1], entry))
    return [p for _, p in sorted(found)]


def _remove_split(directory: Path, bundle: str) -> None:
    """Remove a split copy of `bundle` left by an earlier build."""
    index = directory / layout.parts_index_filename(bundle)
    if index.exists():
        index.unlink()
    for name in layout.parts_index_signature_filenames(bundle):
        (directory / name).unlink(missing_ok=True)
    for part in _existing_parts(directory, bundle):
        part.unlink()


@dataclass(frozen=True)
class Located:
    """Where a bundle's compressed stream lives: one file, or parts listed by an index."""

    bundle: str
    file: Optional[Path]
    index_path: Optional[Path]
    index: Optional[PartsIndex]

    @property
    def compressed_size(self) -> int:
        """Size of the whole compressed stream."""
        if self.index is not None:
            return self.index.size
        assert self.file is not None
        return self.file.stat().st_size


def locate(path: PathLike) -> Located:
    """Resolve a bundle file, its parts index, any of its parts, or the directory holding it."""
    p = Path(path)
    if p.is_dir():
        indexes = sorted(p.glob("*" + layout.PARTS_INDEX_SUFFIX))
        bundles = sorted(p.glob("*" + layout.BUNDLE_SUFFIX))
        candidates = indexes or bundles
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise Error(f"{p} must hold exactly one bundle (found: {found})",
                        hint="pass the bundle file or its parts index instead of the directory")
        p = candidates[0]
    bundle = layout.bundle_of_index(p.name)
    if bundle is None:
        parsed = layout.parse_part_filename(p.name)
        if parsed is not None:
            bundle = parsed[0]
        elif p.is_file():
            return Located(p.name, p, None, None)
        elif (p.parent / layout.parts_index_filename(p.name)).is_file():
            bundle = p.name
        else:
            raise Error(f"bundle {p} does not exist", hint="pass the bundle file, one of its parts, or their directory")
    index_path = p.parent / layout.parts_index_filename(bundle)
    return Located(bundle, None, index_path, PartsIndex.load(index_path))


class _PartsReader:
    """Reads the concatenated parts, checking each part's sha256 when its last byte has been read."""

    def __init__(self, directory: Path, index: PartsIndex) -> None:
        self._dir = directory
        self._parts = list(index.parts)
        for part in self._parts:  # fail fast on what is cheap to see
            path = directory / part.name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise Error(f"part {part.name} is missing from {directory}",
                            hint=f"copy every part listed in the index; {_COPY_AGAIN}") from None
            if size != part.size:
                raise Error(f"part {part.name} is {size} bytes, the index says {part.size}",
                            hint=f"the part is truncated or from another build; {_COPY_AGAIN}")
        self._i = -1
        self._file = None
        self._hash = hashlib.sha256()
        self._read = 0

    def _next_part(self) -> bool:
        if self._file is not None:
            self._file.close()
            self._file = None
            part = self._parts[self._i]
            if self._read != part.size or self._hash.hexdigest() != part.sha256:
                raise Error(f"part {part.name} is damaged: its sha256 differs from the index",
                            hint=f"the part was modified, swapped with another or duplicated; {_COPY_AGAIN}")
        self._i += 1
        if self._i >= len(self._parts):
            return False
        self._file = open(self._dir / self._parts[self._i].name, "rb", buffering=0)  # noqa: SIM115 closed by _next_part/close
        self._hash = hashlib.sha256()
        self._read = 0
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes of the stream (b'' at the end)."""
        if n is None or n < 0:
            n = 1 << 20
        while True:
            if self._file is None and not self._next_part():
                return b""
            data = self._file.read(n)
            if data:
                self._hash.update(data)
                self._read += len(data)
                return data
            if not self._next_part():
                return b""

    def blame(self) -> None:
        """After a failure downstream, raise the error of the first damaged part from here on, if any."""
        while self._file is not None or self._i < 0:
            while self.read(1 << 20):
                pass

    def close(self) -> None:
        """Close the current part."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def readable(self) -> bool:
        return True


def open_stream(path: PathLike):
    """A binary reader of the compressed stream of a bundle file, its index, any part, or their directory."""
    return open_located(locate(path))


def open_located(located: Located):
    """A binary reader of the compressed stream `located` names (split: the parts its index lists)."""
    if located.file is not None:
        try:
            return open(located.file, "rb", buffering=0)
        except OSError as e:
            raise Error(f"cannot open bundle {located.file}: {e.strerror}") from None
    assert located.index_path is not None and located.index is not None
    return _PartsReader(located.index_path.parent, located.index)
