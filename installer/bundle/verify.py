"""Verify a bundle: the signature over the manifest first, then every member against the manifest."""

from __future__ import annotations

import hashlib
import os
from contextlib import closing
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Union

import zstandard

from installer.bundle import layout, parts, signature, tarstream
from installer.bundle.manifest import FileEntry, Manifest
from installer.bundle.tarstream import Buffered, FrameCheck, Truncated
from installer.errors import Error

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[int, int], None]  # (file bytes done, file bytes in total)
MAX_MANIFEST_SIZE = 64 << 20
_COPY_AGAIN = "copy the bundle again from the build host (or rebuild it)"
_TAMPERED = "the bundle was modified after it was signed, or is damaged; " + _COPY_AGAIN


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification vouches for."""

    name: str
    version: str
    files: int
    bytes: int
    fingerprint: str


class _Stream:
    """The decompressed tar stream of a bundle, with the raw stream's frame check and parts checks."""

    def __init__(self, path: PathLike) -> None:
        self.raw = parts.open_stream(path)
        self.frames = FrameCheck(self.raw.read)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self.frames, read_size=tarstream.CHUNK, read_across_frames=True
        )
        self.buf = Buffered(self._reader.read)

    def blame_parts(self) -> None:
        """Raise the error naming a damaged part when one explains a failure (split bundles only)."""
        blame = getattr(self.raw, "blame", None)
        if blame is not None:
            blame()

    def close(self) -> None:
        self._reader.close()
        self.raw.close()


def _member_error(name: str, why: str, hint: str = _TAMPERED) -> Error:
    return Error(f"bundle member {name!r} {why}", context="verifying the bundle", hint=hint)


def _read_head(buf: Buffered) -> tuple[bytes, bytes]:
    """The raw bytes of the first two members, which must be manifest.json then manifest.sig."""
    out = []
    for position, expected, limit in (("first", layout.MANIFEST, MAX_MANIFEST_SIZE),
                                      ("second", layout.SIGNATURE, signature.SIGNATURE_SIZE)):
        member = tarstream.read_header(buf)
        if member is None:
            raise Error(f"bundle ends before its {expected}", hint=_COPY_AGAIN)
        if member.name != expected:
            raise _member_error(member.name, f"is the {position} member, but the {position} member of a bundle "
                                f"must be {expected}")
        reason = tarstream.refuse_reason(member)
        if reason:
            raise _member_error(member.name, reason)
        if member.size > limit:
            raise _member_error(member.name, f"is {member.size} bytes, more than the {limit} allowed")
        try:
            out.append(buf.read_exact(member.size))
            buf.skip(-member.size % tarstream.BLOCK)
        except Truncated:
            raise Error(f"bundle is truncated inside {expected}", hint=_COPY_AGAIN) from None
    return out[0], out[1]


def read_head(path: PathLike, public_key=None) -> tuple[Manifest, bytes, bytes]:
    """(manifest, its exact bytes, signature) from the first two members only; checks the signature if a key is given."""
    with closing(_Stream(path)) as stream:
        try:
            manifest_bytes, sig = _read_head(stream.buf)
        except zstandard.ZstdError as e:
            stream.frames.explain()
            raise Error(f"compressed stream is corrupt: {e}", hint=_COPY_AGAIN) from None
    if public_key is not None:
        signature.verify(public_key, manifest_bytes, sig)
    return Manifest.from_bytes(manifest_bytes), manifest_bytes, sig


def check_stream(
    path: PathLike,
    public_key,
    *,
    progress: Optional[Progress] = None,
    open_output: Optional[Callable[[FileEntry], BinaryIO]] = None,
) -> VerifyReport:
    """Verify the whole bundle in one pass, handing each file's bytes to open_output(entry) when given."""
    with closing(_Stream(path)) as stream:
        buf = stream.buf
        current = layout.MANIFEST
        signed = False
        try:
            manifest_bytes, sig = _read_head(buf)
            signature.verify(public_key, manifest_bytes, sig)
            signed = True
            manifest = Manifest.from_bytes(manifest_bytes)
            expected = manifest.by_path()
            seen: set[str] = set()
            total, done = manifest.total_size, 0
            if progress:
                progress(0, total)
            while True:
                member = tarstream.read_header(buf)
                if member is None:
                    break
                current = member.name
                reason = tarstream.refuse_reason(member)
                if reason:
                    raise _member_error(member.name, reason)
                if member.name in layout.RESERVED or member.name in seen:
                    raise _member_error(member.name, "appears more than once")
                entry = expected.get(member.name)
                if entry is None:
                    raise _member_error(member.name, "is not in the signed manifest")
                seen.add(member.name)
                if member.size != entry.size:
                    raise _member_error(member.name, f"is {member.size} bytes, the manifest says {entry.size}")
                digest = hashlib.sha256()
                out = open_output(entry) if open_output is not None else None
                try:
                    for piece in buf.chunks(member.size):
                        digest.update(piece)
                        if out is not None:
                            out.write(piece)
                        done += len(piece)
                        if progress:
                            progress(done, total)
                finally:
                    if out is not None:
                        out.close()
                buf.skip(-member.size % tarstream.BLOCK)
                if digest.hexdigest() != entry.sha256:
                    raise _member_error(member.name, "has the wrong sha256 (its content differs from the manifest)")
            current = "the end of the archive"
            missing = [p for p in expected if p not in seen]
            if missing:
                raise Error(
                    f"bundle is missing {len(missing)} member(s) listed in the manifest, first {missing[0]!r}",
                    context="verifying the bundle",
                    details=missing[:20],
                    hint=_TAMPERED,
                )
            tarstream.finish(buf)
            stream.frames.drain()
        except Truncated:
            stream.blame_parts()
            raise Error(f"bundle is truncated inside member {current!r}", hint=_COPY_AGAIN) from None
        except zstandard.ZstdError as e:
            stream.blame_parts()
            stream.frames.explain()
            raise Error(f"compressed stream is corrupt near member {current!r}: {e}", hint=_COPY_AGAIN) from None
        except Error:
            if signed:  # a wrong key should not cost a read of every part before it is reported
                stream.blame_parts()
            raise
    return VerifyReport(manifest.name, manifest.version, len(manifest.files), total,
                        signature.fingerprint(public_key))


def verify_bundle(path: PathLike, public_key, progress: Optional[Progress] = None) -> VerifyReport:
    """Verify signature, every member's size and sha256, no extra/missing/duplicate/unsafe members, no trailing bytes."""
    return check_stream(path, public_key, progress=progress)
