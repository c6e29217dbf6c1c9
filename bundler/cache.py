"""Content-addressed download cache: sha256 -> file, safe when several builds share it."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import re
import stat
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Set, Tuple, Union

from contract.errors import DigestMismatch, Error

CHUNK = 1024 * 1024
ENV = "K8S_OFFLINE_CACHE"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_root() -> Path:
    """The cache directory: $K8S_OFFLINE_CACHE, else ~/.cache/k8s-offline."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "k8s-offline"


def hex_of(digest: str) -> str:
    """'sha256:<hex>' or '<hex>' -> '<hex>', refusing anything that is not a sha256."""
    hexdigest = digest[len("sha256:"):] if digest.startswith("sha256:") else digest
    if not _HEX64.match(hexdigest):
        raise Error(f"not a sha256 digest: {digest!r}", context="addressing the download cache",
                    hint="expected 64 lower-case hex digits, optionally prefixed with 'sha256:'")
    return hexdigest


def private_dir(path: Union[str, Path], what: str) -> Path:
    """`path` as a directory only this user can write: created 0700 when missing; refused when it is a symlink,
    not a directory, owned by another user, or group/world-writable. For what ends up signed in a bundle (the
    static build's venv and its cached executables): nobody else may plant files there.
    static/build.sh applies the same rule to its work directory (a test checks that both refuse alike)."""
    path = Path(path).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
        st = os.lstat(path)
    except OSError as e:
        raise Error(f"cannot create {what} {path}: {e.strerror}", context=f"preparing {what}",
                    hint=f"pass --cache DIR or set {ENV} to a directory of your own") from None
    problem = None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is a symbolic link or not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        raise Error(f"{what} {path} {problem}: refusing to use it", context=f"preparing {what}",
                    hint="what is built there is signed into the bundle, so nobody else may write it: remove it "
                         f"or use a private cache (--cache DIR or {ENV}, default ~/.cache/k8s-offline)")
    return path


def try_lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


@dataclass
class PruneReport:
    """What `Cache.prune` removed and kept."""

    removed_objects: List[str] = field(default_factory=list)
    removed_bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    removed_partials: int = 0  # stale partial downloads and temp files


class Writer:
    """Streams bytes into a temp file in the cache; publishes it under its hash only if it checks out."""

    def __init__(self, cache: "Cache", expected_sha256: Optional[str], expected_size: Optional[int]) -> None:
        self._cache = cache
        self._expected = hex_of(expected_sha256) if expected_sha256 else None
        self._expected_size = expected_size
        self._hash = hashlib.sha256()
        self._file: Optional[BinaryIO] = None
        self._tmp: Optional[Path] = None
        self.size = 0
        self.sha256: Optional[str] = None
        self.path: Optional[Path] = None

    def __enter__(self) -> "Writer":
        self._tmp, self._file = self._cache._temp_file()
        return self

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write() outside the with-block"
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._tmp is not None
        self._file.close()  # releases the flock that marked the temp file as in use
        if exc_type is not None:
            _unlink(self._tmp)
            return
        self.sha256 = self._hash.hexdigest()
        try:
            check(self.sha256, self.size, self._expected, self._expected_size, what="cache write")
        except Error:
            _unlink(self._tmp)
            raise
        self.path = self._cache._publish(self._tmp, self.sha256)


def check(actual_sha: str, actual_size: int, expected_sha: Optional[str], expected_size: Optional[int],
          what: str) -> None:
    """Raise an Error naming expected and actual when size or hash differ from what was expected."""
    if expected_size is not None and actual_size != expected_size:
        raise DigestMismatch(f"{what}: size mismatch: expected {expected_size} bytes, got {actual_size}",
                    details=[f"expected sha256: {expected_sha or '(not pinned)'}",
                             f"actual sha256: {actual_sha}"])
    if expected_sha is not None and actual_sha != expected_sha:
        raise DigestMismatch(f"{what}: sha256 mismatch",
                    details=[f"expected: {expected_sha}", f"actual:   {actual_sha}"])


class Cache:
    """Objects at <root>/sha256/<aa>/<hex>; a file under its hash name is always complete and verified."""

    def __init__(self, root: Union[str, Path, None] = None) -> None:
        # absolute, so links and paths handed out stay valid whatever the working directory
        self.root = (Path(root).expanduser() if root is not None else default_root()).absolute()
        self._objects = self.root / "sha256"
        self._partial = self.root / "partial"
        self._tmp = self.root / "tmp"
        for d in (self._objects, self._partial, self._tmp):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise Error(f"cannot create the download cache at {self.root}: {e.strerror}",
                            context="opening the download cache",
                            hint=f"pass --cache DIR or set {ENV} to a writable directory") from None

    def path(self, sha256: str) -> Path:
        """Where the object with this hash lives (whether or not it exists)."""
        h = hex_of(sha256)
        return self._objects / h[:2] / h

    def has(self, sha256: str, size: Optional[int] = None) -> bool:
        """True when the object is cached (and, if given, has this size)."""
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def writer(self, expected_sha256: Optional[str] = None, expected_size: Optional[int] = None) -> Writer:
        """A context manager to stream one object in; verified and published when the block ends."""
        return Writer(self, expected_sha256, expected_size)

    def add_file(self, path: Union[str, Path], expected_sha256: Optional[str] = None) -> str:
        """Copy a file into the cache (streaming, hashed on the way); return its sha256."""
        with open(path, "rb") as src, self.writer(expected_sha256) as w:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
        assert w.sha256 is not None
        return w.sha256

    def partial(self, key: str) -> Path:
        """The file a resumable download of `key` appends to (the caller locks it while writing)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)
        return self._partial / safe

    def publish_partial(self, path: Path, sha256: str) -> Path:
        """Move a finished partial download into place; the caller hashed it while writing it."""
        return self._publish(Path(path), hex_of(sha256))

    def gunzipped(self, sha256: str) -> Tuple[str, int]:
        """(sha256, size) of the gunzip of a cached gzip object, cached too: derived/gunzip/<hex> names it."""
        index = self.root / "derived" / "gunzip" / hex_of(sha256)
        try:
            sha, size = index.read_text().split()
            if self.has(sha, int(size)):
                return sha, int(size)
        except (FileNotFoundError, ValueError):
            pass
        try:
            with gzip.open(self.path(sha256), "rb") as src, self.writer() as w:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    w.write(chunk)
        except (OSError, EOFError, zlib.error) as e:
            raise Error(f"cannot decompress cached object {hex_of(sha256)}: {e}", context="unpacking a release tarball",
                        hint="the download is not a gzip file although its name says so; check the spec's URL") from None
        assert w.sha256 is not None
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_name(f".{index.name}.{os.getpid()}")
        tmp.write_text(f"{w.sha256} {w.size}\n")
        os.replace(tmp, index)
        return w.sha256, w.size

    def verify(self, sha256: str) -> bool:
        """Re-hash a cached object; remove it and return False when it no longer matches its name."""
        path = self.path(sha256)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        if h.hexdigest() == hex_of(sha256):
            return True
        _unlink(path)
        return False

    def objects(self) -> Iterator[Tuple[str, int]]:
        """Every cached object as (sha256, size)."""
        for sub in sorted(self._objects.iterdir()):
            if not sub.is_dir():
                continue
            for p in sorted(sub.iterdir()):
                if _HEX64.match(p.name):
                    try:
                        yield p.name, p.stat().st_size
                    except FileNotFoundError:  # pruned by a concurrent process
                        continue

    def size(self) -> int:
        """Total bytes of cached objects."""
        return sum(size for _, size in self.objects())

    def prune(self, keep: Set[str], stale_after: float = 0.0) -> PruneReport:
        """Remove objects whose hash is not in `keep`, and partial/temp files no live writer holds."""
        keep = {hex_of(k) for k in keep}
        derived = self.root / "derived" / "gunzip"
        for index in sorted(derived.iterdir()) if derived.is_dir() else ():
            recorded = index.read_text().split()[:1] if _HEX64.match(index.name) else []
            if index.name in keep and recorded:  # the gunzip of a kept object is kept with it
                keep.add(recorded[0])
            elif _HEX64.match(index.name):
                _unlink(index)
        report = PruneReport()
        for sha, size in list(self.objects()):
            if sha in keep:
                report.kept_objects += 1
                report.kept_bytes += size
            else:
                _unlink(self.path(sha))
                report.removed_objects.append(sha)
                report.removed_bytes += size
        now = time.time()
        for d in (self._partial, self._tmp):
            for p in d.iterdir():
                if self._remove_if_stale(p, now - stale_after):
                    report.removed_partials += 1
        return report

    def _remove_if_stale(self, path: Path, cutoff: float) -> bool:
        # writers hold an flock on their file: one we can lock belongs to a dead or finished process
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_mtime > cutoff or not try_lock(fd):
                return False
            _unlink(path)
            return True
        finally:
            os.close(fd)

    def _temp_file(self) -> Tuple[Path, BinaryIO]:
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=f"{os.getpid()}-", suffix=".tmp")
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Path(name), os.fdopen(fd, "wb", buffering=CHUNK)

    def _publish(self, tmp: Path, hexdigest: str) -> Path:
        final = self.path(hexdigest)
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o644)
        try:
            # link refuses to replace: a concurrent writer of the same hash got there first and
            # its file is identical, so this copy is just dropped
            os.link(tmp, final)
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            os.replace(tmp, final)  # filesystems without hard links: an atomic replace of identical bytes
            return final
        _unlink(tmp)
        return final


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
