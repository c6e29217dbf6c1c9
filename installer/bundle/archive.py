"""Write a bundle as one deterministic zstd-compressed tar stream; read, unpack and inspect it safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Optional, Union

import zstandard

from installer.bundle import layout, signature, tarstream
from installer.bundle.manifest import FileEntry, Manifest, now_created, parse_created
from installer.bundle.parts import _Writer, locate, open_stream, parse_size
from installer.bundle.verify import Progress, VerifyReport, check_stream, read_head
from installer.errors import Error

__all__ = [
    "DEFAULT_LEVEL",
    "BundleResult",
    "Entry",
    "inspect_bundle",
    "open_stream",
    "parse_size",
    "read_manifest",
    "unpack_bundle",
    "write_bundle",
]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_LEVEL = 9  # most of a bundle (rpms, image layers) is already compressed; higher levels buy little


@dataclass(frozen=True)
class Entry:
    """A file to put into the bundle, with its size and sha256 already known (e.g. from the build cache)."""

    path_in_bundle: str
    source_path: PathLike
    size: int
    sha256: str
    mode: int = 0o644


@dataclass(frozen=True)
class BundleResult:
    """What write_bundle wrote: `path` is what to hand to the installer (the bundle file or its parts index)."""

    path: Path
    name: str
    version: str
    manifest: Manifest
    size: int  # of the compressed stream
    sha256: str  # of the compressed stream
    index: Optional[Path]
    parts: tuple[Path, ...]
    fingerprint: str


def write_bundle(
    out_dir: PathLike,
    name: str,
    version: str,
    entries: Iterable[Entry],
    private_key,
    *,
    spec_sha256: str,
    lock_sha256: str,
    components: Mapping[str, str],
    split_size: Optional[Union[int, str]] = None,
    level: int = DEFAULT_LEVEL,
    threads: int = -1,
    progress: Optional[Progress] = None,
    created: Optional[Union[datetime, str]] = None,
) -> BundleResult:
    """Sign a manifest of `entries` and stream them into <name>-<version>.bundle.tar.zst (or its parts)."""
    out = Path(out_dir)
    bundle = layout.bundle_filename(name, version)
    split = parse_size(split_size) if split_size is not None else None
    entries = sorted(entries, key=lambda e: e.path_in_bundle)
    created_text = now_created(created)
    manifest = Manifest(
        format_version=layout.FORMAT_VERSION,
        name=name,
        version=version,
        created=created_text,
        spec_sha256=spec_sha256,
        lock_sha256=lock_sha256,
        components=dict(components),
        files=tuple(FileEntry(e.path_in_bundle, e.size, e.sha256, e.mode) for e in entries),
        signer=signature.fingerprint(private_key.public_key()),
    ).check()
    manifest_bytes = manifest.to_bytes()
    sig = signature.sign(private_key, manifest_bytes)
    mtime = int(parse_created(created_text).timestamp())

    out.mkdir(parents=True, exist_ok=True)
    sink = _Writer(out, bundle, split)
    try:
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        with compressor.stream_writer(sink, closefd=False) as zout:
            for member, data in ((layout.MANIFEST, manifest_bytes), (layout.SIGNATURE, sig)):
                zout.write(tarstream.file_header(member, len(data), 0o644, mtime))
                zout.write(data)
                zout.write(tarstream.padding(len(data)))
            total, done = manifest.total_size, 0
            if progress:
                progress(0, total)
            chunk = bytearray(tarstream.CHUNK)
            for entry in entries:
                zout.write(tarstream.file_header(entry.path_in_bundle, entry.size, entry.mode, mtime))
                done = _copy_checked(entry, chunk, zout, done, total, progress)
                zout.write(tarstream.padding(entry.size))
            zout.write(tarstream.END_OF_ARCHIVE)
        path, index, part_paths = sink.finish()
    except BaseException:
        sink.abort()
        raise
    return BundleResult(
        path=path,
        name=name,
        version=version,
        manifest=manifest,
        size=sink.size,
        sha256=sink.total.hexdigest(),
        index=index,
        parts=part_paths,
        fingerprint=signature.fingerprint(private_key.public_key()),
    )


def _copy_checked(entry: Entry, chunk: bytearray, out, done: int, total: int,
                  progress: Optional[Progress]) -> int:
    """Copy exactly entry.size bytes of the source into `out`, re-hashing; Error if the source changed."""
    digest = hashlib.sha256()
    view = memoryview(chunk)
    left = entry.size
    try:
        with open(entry.source_path, "rb", buffering=0) as f:
            while left > 0:
                n = f.readinto(view[: min(left, len(view))])
                if not n:
                    break
                digest.update(view[:n])
                out.write(view[:n])
                left -= n
                done += n
                if progress:
                    progress(done, total)
            grew = left == 0 and f.read(1) != b""
    except OSError as e:
        raise Error(f"cannot read {entry.source_path} for {entry.path_in_bundle}: {e.strerror}",
                    context="writing the bundle") from None
    if left or grew or digest.hexdigest() != entry.sha256:
        raise Error(
            f"{entry.source_path} ({entry.path_in_bundle}) changed: it no longer has the size {entry.size} "
            f"and sha256 {entry.sha256} it was planned with",
            context="writing the bundle",
            hint="the file changed while the bundle was written (or the cache is corrupt); build again",
        )
    return done


def read_manifest(path: PathLike, public_key=None) -> tuple[Manifest, bytes, bytes]:
    """(manifest, exact manifest bytes, signature) from the first two members; verified when a key is given."""
    return read_head(path, public_key)


def unpack_bundle(path: PathLike, public_key, dest: PathLike,
                  progress: Optional[Progress] = None) -> VerifyReport:
    """Verify while extracting into a temp dir beside dest; rename it into place only once all verified."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise Error(f"{dest} exists and is not a directory", hint="choose an empty or new directory to unpack into")
    if dest.is_dir() and any(dest.iterdir()):
        raise Error(f"{dest} is not empty", context="unpacking the bundle",
                    hint="choose an empty or new directory to unpack into")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    modes: list[tuple[Path, int]] = []

    def open_output(entry: FileEntry) -> BinaryIO:
        target = tmp / entry.path  # the path was validated against traversal by the manifest and the reader
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        modes.append((target, entry.mode & 0o755))  # never setuid/setgid, never group/other-writable
        return os.fdopen(fd, "wb", buffering=0)

    try:
        report = check_stream(path, public_key, progress=progress, open_output=open_output)
        for target, mode in modes:
            os.chmod(target, mode)
        for directory, _, _ in os.walk(tmp):
            os.chmod(directory, 0o755)
        if dest.is_dir():
            dest.rmdir()  # empty, checked above; fails loudly if something appeared meanwhile
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def inspect_bundle(path: PathLike, public_key=None) -> dict:
    """What a bundle holds, from its manifest alone: counts and sizes per kind, components, parts."""
    located = locate(path)
    manifest, manifest_bytes, _ = read_head(path, public_key)
    kinds = {kind: {"files": 0, "bytes": 0} for kind in layout.KINDS}
    for f in manifest.files:
        k = kinds[layout.kind_of(f.path)]
        k["files"] += 1
        k["bytes"] += f.size
    info = {
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "format_version": manifest.format_version,
        "spec_sha256": manifest.spec_sha256,
        "lock_sha256": manifest.lock_sha256,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "signer": manifest.signer or None,
        "components": dict(sorted(manifest.components.items())),
        "files": len(manifest.files),
        "bytes": manifest.total_size,
        "kinds": kinds,
        "compressed_bytes": located.compressed_size,
        "parts": [p.name for p in located.index.parts] if located.index else [],
    }
    if public_key is not None:
        info["signature"] = {"verified": True, "fingerprint": signature.fingerprint(public_key)}
    return info
