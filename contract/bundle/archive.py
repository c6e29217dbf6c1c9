"""Write a bundle as one deterministic zstd-compressed tar stream; read, unpack and inspect it safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Optional, Union

import zstandard

from contract.bundle import contents as contents_mod
from contract.bundle import layout, signature, tarstream
from contract.bundle.contents import Component, TrustEntry
from contract.bundle.delta import BaseDir, Delta
from contract.bundle.delta import summary as delta_summary
from contract.bundle.manifest import FileEntry, Manifest, now_created, parse_created
from contract.bundle.parts import _Writer, locate, open_stream, parse_size
from contract.bundle.verify import Head, Progress, VerifyReport, check_stream, read_head, read_signed_head
from contract.errors import Error

__all__ = [
    "DEFAULT_LEVEL",
    "BundleResult",
    "check_level",
    "Entry",
    "inspect_bundle",
    "open_stream",
    "parse_size",
    "read_manifest",
    "unpack_bundle",
    "write_bundle",
]

PathLike = Union[str, "os.PathLike[str]"]
# A bundle is two zstd frames: members that compress well (executables and tar archives of them,
# metadata) at a high level with long-distance matching, so the many Go binaries that share most of
# their code are stored nearly once; then members that are already compressed (image layers, RPMs,
# wheels, .gz files, and tar archives whose bytes are mostly such files, like Harbor's offline
# installer) at a fast level, where a high one would cost minutes and save nothing.
# Level 12 with long-distance matching: on release-size Go executables (bench/bench_bundle_size.py) about 10%
# bigger than 19 on the executables alone, a few % on the whole bundle (whose layers, RPMs and Harbor images
# compress no further), in a small fraction of the time; levels 13-15 gain almost nothing over 12.
DEFAULT_LEVEL = 12
STORED_LEVEL = 3
WINDOW_LOG = 27  # 128 MiB of history: the largest window zstd decoders accept without being told to
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh", b"PK\x03\x04",
                     b"\xed\xab\xee\xdb", b"\x89PNG")  # gzip zstd xz bzip2 zip/wheel rpm png
_SMALL = 64 << 10  # below this, a member goes with the compressible ones whatever it holds
_SAMPLE = 256 << 10  # how much of a member without a known magic number is test-compressed


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
    fingerprint_p256: str = ""  # of the P-256 key that made manifest.sig.p256; "" when there is none


def write_bundle(
    out_dir: PathLike,
    name: str,
    version: str,
    entries: Iterable[Entry],
    private_key: signature.Ed25519PrivateKey,
    *,
    p256_key: Optional[signature.P256PrivateKey] = None,
    spec_sha256: str,
    lock_sha256: str,
    components: Iterable[Component] = (),
    trust: Iterable[TrustEntry] = (),
    options: Optional[Mapping[str, str]] = None,
    split_size: Optional[Union[int, str]] = None,
    level: int = DEFAULT_LEVEL,
    threads: int = -1,
    progress: Optional[Progress] = None,
    created: Optional[Union[datetime, str]] = None,
    delta: Optional[Delta] = None,
) -> BundleResult:
    """Sign a manifest of `entries` and stream them into <name>-<version>.bundle.tar.zst (or its parts).

    With `delta`, a delta bundle (contract/bundle/delta.py): the same signed manifest of every entry, then
    delta.json, then only the entries delta.from_base does not name (<name>-<version>.delta-from-<base>...).

    The manifest is signed with the Ed25519 key (manifest.sig) and, when p256_key is given, with it too
    (manifest.sig.p256, the third member); the manifest then names that key (signer_p256). A split bundle's
    parts index is signed with the same key(s): <index>.sig and <index>.sig.p256 beside it. components, trust
    and options are the manifest's typed contents (contract.bundle.contents; the manifest sorts them).
    """
    out = Path(out_dir)
    bundle = (layout.delta_filename(name, version, delta.base.version or f"lock-{delta.base.lock_sha256[:12]}")
              if delta is not None else layout.bundle_filename(name, version))
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
        components=tuple(components),
        trust=tuple(trust),
        options=dict(options or {}),
        files=tuple(FileEntry(e.path_in_bundle, e.size, e.sha256, e.mode) for e in entries),
        signer=signature.fingerprint(private_key.public_key()),
        signer_p256=signature.encode_p256_public(p256_key.public_key()) if p256_key is not None else "",
    ).check()
    manifest_bytes = manifest.to_bytes()
    head = [(layout.MANIFEST, manifest_bytes), (layout.SIGNATURE, signature.sign(private_key, manifest_bytes))]
    if p256_key is not None:
        head.append((layout.SIGNATURE_P256, signature.sign_p256(p256_key, manifest_bytes)))
    if delta is not None:
        Delta.from_bytes(delta.to_bytes(), manifest)  # every path it takes from the base is a file of the manifest
        head.append((layout.DELTA, delta.to_bytes()))
        skipped = frozenset(delta.from_base)
        entries = [e for e in entries if e.path_in_bundle not in skipped]
    mtime = int(parse_created(created_text).timestamp())

    check_level(level)
    out.mkdir(parents=True, exist_ok=True)
    sink = _Writer(out, bundle, split)
    try:
        dense, stored = _split_by_compressibility(entries)
        zout = _Frames(sink, level, threads)
        zout.start(dense=True)
        for member, data in head:
            zout.write(tarstream.file_header(member, len(data), 0o644, mtime))
            zout.write(data)
            zout.write(tarstream.padding(len(data)))
        total, done = sum(e.size for e in entries), 0
        if progress:
            progress(0, total)
        chunk = bytearray(tarstream.CHUNK)
        for is_dense, group in ((True, dense), (False, stored)):
            if group:
                zout.start(dense=is_dense)
            for entry in group:
                zout.write(tarstream.file_header(entry.path_in_bundle, entry.size, entry.mode, mtime))
                done = _copy_checked(entry, chunk, zout, done, total, progress)
                zout.write(tarstream.padding(entry.size))
        zout.write(tarstream.END_OF_ARCHIVE)
        zout.close()
        path, index, part_paths = sink.finish(
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), signer_p256=manifest.signer_p256,
            sign=lambda data: [signature.sign(private_key, data)]
            + ([signature.sign_p256(p256_key, data)] if p256_key is not None else []))
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
        fingerprint_p256=signature.fingerprint(p256_key.public_key()) if p256_key is not None else "",
    )


def check_level(level: int) -> None:
    """Error unless `level` is a zstd level."""
    if not 1 <= level <= 22:
        raise Error(f"compression level {level} is out of range", context="writing the bundle",
                    hint=f"pass a zstd level from 1 (fastest) to 22 (smallest); the default is {DEFAULT_LEVEL}")


class _Frames:
    """A compressed stream that can end its zstd frame and go on in a new one with other parameters."""

    def __init__(self, sink, level: int, threads: int) -> None:
        self._sink = sink
        self._dense = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters.from_level(
            level, window_log=WINDOW_LOG, enable_ldm=True, threads=threads, write_checksum=1))
        self._stored = zstandard.ZstdCompressor(level=min(level, STORED_LEVEL), threads=threads, write_checksum=True)
        self._writer = None
        self._kind = True

    def start(self, dense: bool) -> None:
        """Go on in a frame of this kind: end the current frame and begin a new one if its kind differs."""
        if self._writer is not None and self._kind == dense:
            return
        self.close()
        self._kind = dense
        self._writer = (self._dense if dense else self._stored).stream_writer(self._sink, closefd=False)

    def write(self, data) -> None:
        self._writer.write(data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # flushes the end of the frame into the sink, which stays open
            self._writer = None


def _split_by_compressibility(entries: list) -> tuple[list, list]:
    """(members worth compressing hard, members already compressed), each in path order."""
    dense, stored = [], []
    for entry in entries:
        (stored if entry.size >= _SMALL and _looks_compressed(entry.source_path) else dense).append(entry)
    return dense, stored


def _looks_compressed(path: PathLike) -> bool:
    """A known compressed format by its magic number, or a sample that a fast zstd level cannot shrink."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SAMPLE)
    except OSError:
        return False  # _copy_checked reports it, naming the member
    if head.startswith(_COMPRESSED_MAGIC):
        return True
    if head[257:262] == b"ustar":
        return _mostly_compressed_tar(path)
    return len(zstandard.ZstdCompressor(level=1).compress(head)) > 0.9 * len(head)


def _mostly_compressed_tar(path: PathLike) -> bool:
    """Whether most of a tar's file bytes are in members that are compressed already (by magic number);
    reads the member headers and each member's first bytes only."""
    packed = plain = 0
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                f.seek(member.offset_data)
                if member.size >= _SMALL and f.read(8).startswith(_COMPRESSED_MAGIC):
                    packed += member.size
                else:
                    plain += member.size
    except (OSError, tarfile.TarError):
        return False  # not a tar after all: it goes with the compressible ones
    return packed > plain


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


def read_manifest(path: PathLike, public_key: Optional[signature.PublicKey] = None
                  ) -> tuple[Manifest, bytes, bytes]:
    """(manifest, exact manifest bytes, Ed25519 signature) from the head; verified when a key (either) is given."""
    return read_head(path, public_key)


def unpack_bundle(path: PathLike, public_key: signature.PublicKey, dest: PathLike,
                  progress: Optional[Progress] = None, base: Optional[BaseDir] = None) -> VerifyReport:
    """Verify while extracting into a temp dir beside dest; rename it into place only once all verified.

    dest also gets the signed manifest and its signature(s) (never an entry's name), so that an unpacked
    bundle says what it is: the base of a later delta is found by it. A delta is combined with `base`."""
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

    def keep_head(head: Head) -> None:
        for name, data in ((layout.MANIFEST, head.manifest_bytes), (layout.SIGNATURE, head.sig),
                           (layout.SIGNATURE_P256, head.sig_p256)):
            if data is not None:
                (tmp / name).write_bytes(data)
                modes.append((tmp / name, 0o644))

    try:
        report = check_stream(path, public_key, progress=progress, open_output=open_output, base=base,
                              on_head=keep_head)
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


def inspect_bundle(path: PathLike, public_key: Optional[signature.PublicKey] = None) -> dict:
    """What a bundle holds, from its manifest alone: counts and sizes per kind, components, parts, signers."""
    located = locate(path)
    manifest, head, verified = read_signed_head(path, public_key)
    manifest_bytes = head.manifest_bytes
    p256_signer = manifest.p256_signer()
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
        "signer_p256": signature.fingerprint(p256_signer) if p256_signer is not None else None,
        "signatures": list(head.signatures),
        **manifest.contents.to_dict(),  # components, trust, options (format 1: as derived from its map)
        "warnings": list(contents_mod.warnings(manifest.trust)),
        "notes": list(contents_mod.notes(manifest.trust)),
        "files": len(manifest.files),
        "bytes": manifest.total_size,
        "kinds": kinds,
        "compressed_bytes": located.compressed_size,
        "parts": [p.name for p in located.index.parts] if located.index else [],
    }
    if head.delta is not None:
        info["delta"] = delta_summary(manifest, Delta.from_bytes(head.delta, manifest))
    if manifest.format_version == 1:
        info["legacy_components"] = manifest.unmapped()  # format 1 entries that name no component/trust/option
    if verified is not None:
        info["signature"] = {"verified": True, "fingerprint": verified.fingerprint, "key_type": verified.key_type,
                             "checked": list(verified.checked), "not_checked": list(verified.not_checked)}
    return info
