"""Verify a bundle: the signature(s) over the manifest first, then every member against the manifest.

The head of the stream is manifest.json, manifest.sig (Ed25519) and, when the bundle was also signed
with a P-256 key, manifest.sig.p256 (ECDSA P-256, DER). An Ed25519 key checks manifest.sig and, when the
signed manifest names a P-256 key (signer_p256), manifest.sig.p256 with that key too. A P-256 key checks
manifest.sig.p256 alone and must be the key the manifest names; manifest.sig is then not checked.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import closing
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Union

import zstandard

from contract.bundle import contents, layout, partcheck, signature, tarstream
from contract.bundle.delta import MAX_SIZE as MAX_DELTA_SIZE
from contract.bundle.delta import BaseDir, Delta
from contract.bundle.manifest import FileEntry, Manifest
from contract.bundle.tarstream import Buffered, FrameCheck, Member, ReadAhead, Truncated
from contract.errors import Error

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[int, int], None]  # (file bytes done, file bytes in total)
MAX_MANIFEST_SIZE = 64 << 20
_COPY_AGAIN = "copy the bundle again from the build host (or rebuild it)"
_TAMPERED = "the bundle was modified after it was signed, or is damaged; " + _COPY_AGAIN


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification vouches for; `fingerprint` is the key that verified (the one given)."""

    name: str
    version: str
    files: int
    bytes: int
    fingerprint: str
    key_type: str = signature.ED25519
    checked: tuple[str, ...] = (layout.SIGNATURE,)  # the signature members that verified
    not_checked: tuple[str, ...] = ()  # signature members present that the given key cannot check
    parts_index: str = ""  # split bundles: 'signed: <files>' or 'unsigned'; '' for one file
    warnings: tuple[str, ...] = ()  # an unsigned parts index; sources whose check is a warning (contents.LEVEL)
    delta_base: str = ""  # a delta bundle: the base it needs (Base.describe()); '' for a complete bundle
    from_base_files: int = 0  # of `files`, taken from the base (a delta)
    from_base_bytes: int = 0
    base_checked: bool = False  # whether those were read from the base and checked (False: no base given)


@dataclass(frozen=True)
class Head:
    """The raw head of a bundle: the manifest bytes and the signature member(s) over them."""

    manifest_bytes: bytes
    sig: bytes
    sig_p256: Optional[bytes] = None
    delta: Optional[bytes] = None  # delta.json of a delta bundle

    @property
    def members(self) -> tuple[str, ...]:
        """The signature members this bundle carries (and delta.json, of a delta)."""
        return ((layout.SIGNATURE,) + ((layout.SIGNATURE_P256,) if self.sig_p256 is not None else ())
                + ((layout.DELTA,) if self.delta is not None else ()))

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != layout.DELTA)


@dataclass(frozen=True)
class Signed:
    """A manifest whose signature(s) verified, and how."""

    manifest: Manifest
    fingerprint: str
    key_type: str
    checked: tuple[str, ...]
    not_checked: tuple[str, ...]


class _Stream:
    """The decompressed tar stream of a bundle, with the raw stream's frame check and parts checks.

    With a key, a split bundle's parts index is checked first (its signatures), and with every_part each
    part against it before they are joined (partcheck)."""

    def __init__(self, path: PathLike, public_key: Optional[signature.PublicKey] = None,
                 every_part: bool = False, read_ahead: bool = False) -> None:
        self.raw, self.parts_index = partcheck.open_checked(path, public_key, every_part=every_part)
        self.frames = FrameCheck(self.raw.read)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self.frames, read_size=tarstream.CHUNK, read_across_frames=True
        )
        # a whole pass decompresses in a thread of its own while this one hashes; the head alone does not
        self._ahead = ReadAhead(self._reader.read) if read_ahead else None
        self.buf = Buffered(self._ahead.read if self._ahead is not None else self._reader.read)

    def stop_reading(self) -> None:
        """End the read-ahead thread (if any): the raw stream is then this thread's alone."""
        if self._ahead is not None:
            self._ahead.stop()

    def blame_parts(self) -> None:
        """Raise the error naming a damaged part when one explains a failure (split bundles only)."""
        self.stop_reading()
        blame = getattr(self.raw, "blame", None)
        if blame is not None:
            blame()

    def close(self) -> None:
        self.stop_reading()
        self._reader.close()
        self.raw.close()


def _member_error(name: str, why: str, hint: str = _TAMPERED) -> Error:
    return Error(f"bundle member {name!r} {why}", context="verifying the bundle", hint=hint)


def _read_member(buf: Buffered, member: Member, position: str, limit: int) -> bytes:
    """The data of a head member whose header was read, refusing unsafe or oversized ones."""
    reason = tarstream.refuse_reason(member)
    if reason:
        raise _member_error(member.name, reason)
    if member.size > limit:
        raise _member_error(member.name, f"is {member.size} bytes, more than the {limit} allowed for the "
                            f"{position} member")
    try:
        data = buf.read_exact(member.size)
        buf.skip(-member.size % tarstream.BLOCK)
    except Truncated:
        raise Error(f"bundle is truncated inside {member.name}", hint=_COPY_AGAIN) from None
    return data


def _read_head(buf: Buffered) -> tuple[Head, Optional[Member]]:
    """The head (manifest.json, manifest.sig, then manifest.sig.p256 if present) and the header of the member
    after it (None at the end of the archive)."""
    out = []
    for position, expected, limit in (("first", layout.MANIFEST, MAX_MANIFEST_SIZE),
                                      ("second", layout.SIGNATURE, signature.SIGNATURE_SIZE)):
        member = tarstream.read_header(buf)
        if member is None:
            raise Error(f"bundle ends before its {expected}", hint=_COPY_AGAIN)
        if member.name != expected:
            raise _member_error(member.name, f"is the {position} member, but the {position} member of a bundle "
                                f"must be {expected}")
        out.append(_read_member(buf, member, position, limit))
    sig_p256 = None
    following = tarstream.read_header(buf)
    if following is not None and following.name == layout.SIGNATURE_P256:
        sig_p256 = _read_member(buf, following, "third", signature.P256_MAX_SIGNATURE_SIZE)
        following = tarstream.read_header(buf)
    delta = None
    if following is not None and following.name == layout.DELTA:
        delta = _read_member(buf, following, "delta", MAX_DELTA_SIZE)
        following = tarstream.read_header(buf)
    return Head(out[0], out[1], sig_p256, delta), following


def _read_bundle_head(path: PathLike, public_key: Optional[signature.PublicKey] = None) -> Head:
    """The head of a bundle, reading no further than the header after it (with a key, a split bundle's
    index is checked first and must name this manifest)."""
    with closing(_Stream(path, public_key)) as stream:
        try:
            head, _ = _read_head(stream.buf)
        except zstandard.ZstdError as e:
            stream.frames.explain()
            raise Error(f"compressed stream is corrupt: {e}", hint=_COPY_AGAIN) from None
        partcheck.check_manifest(stream.parts_index, hashlib.sha256(head.manifest_bytes).hexdigest())
    return head


def check_signatures(public_key: signature.PublicKey, head: Head) -> Signed:
    """Verify the head with either key (see the module docstring); the manifest is parsed only once signed."""
    if signature.is_p256(public_key):
        return _check_with_p256(public_key, head)
    signature.verify(public_key, head.manifest_bytes, head.sig)
    manifest = Manifest.from_bytes(head.manifest_bytes)
    p256_key = manifest.p256_signer()
    checked = (layout.SIGNATURE,)
    if p256_key is not None:
        if head.sig_p256 is None:
            raise _member_error(layout.SIGNATURE_P256, f"is not the third member, right after {layout.SIGNATURE}, "
                                f"where it must be: the signed manifest names the P-256 key "
                                f"{signature.fingerprint(p256_key)} (the second signature was removed or moved)")
        try:
            signature.verify(p256_key, head.manifest_bytes, head.sig_p256)
        except Error as e:
            raise Error(f"{e.message}, the P-256 key the manifest names; its Ed25519 signature ({layout.SIGNATURE}) "
                        "verified, so the second signature was replaced or damaged", context=e.context,
                        hint=_TAMPERED) from None
        checked += (layout.SIGNATURE_P256,)
    elif head.sig_p256 is not None:
        raise _member_error(layout.SIGNATURE_P256, "is present, but the signed manifest names no P-256 key "
                            "(signer_p256) to check it with")
    return Signed(manifest, signature.fingerprint(public_key), signature.ED25519, checked, ())


def _check_with_p256(public_key: signature.PublicKey, head: Head) -> Signed:
    """manifest.sig.p256 with the given P-256 key, which the manifest must name; manifest.sig is not checked."""
    fpr = signature.fingerprint(public_key)
    if head.sig_p256 is None:
        raise Error(
            f"the bundle carries only an Ed25519 signature ({layout.SIGNATURE}; no {layout.SIGNATURE_P256} "
            f"right after it), so the P-256 key {fpr} cannot verify it",
            context="verifying the bundle signature",
            hint=f"verify it with {signature.PUBLIC_KEY_FILE} (the Ed25519 key); bundles get the P-256 "
            f"signature when {signature.P256_PRIVATE_KEY_FILE} lies beside {signature.PRIVATE_KEY_FILE} "
            "at build time (or with --p256-key)",
        )
    signature.verify(public_key, head.manifest_bytes, head.sig_p256)
    manifest = Manifest.from_bytes(head.manifest_bytes)
    named = manifest.p256_signer()
    if named is None or not signature.same_key(named, public_key):
        names = (f"names {signature.fingerprint(named)} as its P-256 signer" if named is not None
                 else "names no P-256 key (signer_p256) as its signer")
        raise Error(f"{layout.MANIFEST} {names}, but {layout.SIGNATURE_P256} verified with {fpr}",
                    context="verifying the bundle signature",
                    hint=f"the bundle was assembled from pieces of different bundles; {_COPY_AGAIN}")
    return Signed(manifest, fpr, signature.P256, (layout.SIGNATURE_P256,), (layout.SIGNATURE,))


def read_signed_head(path: PathLike, public_key: Optional[signature.PublicKey] = None
                     ) -> tuple[Manifest, Head, Optional[Signed]]:
    """(manifest, raw head, how it verified) from the head alone; verified only when a key is given."""
    head = _read_bundle_head(path, public_key)
    if public_key is None:
        return Manifest.from_bytes(head.manifest_bytes), head, None
    signed = check_signatures(public_key, head)
    return signed.manifest, head, signed


def read_head(path: PathLike, public_key: Optional[signature.PublicKey] = None) -> tuple[Manifest, bytes, bytes]:
    """(manifest, its exact bytes, Ed25519 signature) from the head only; checks the signature(s) if a key is
    given (see check_signatures)."""
    manifest, head, _ = read_signed_head(path, public_key)
    return manifest, head.manifest_bytes, head.sig


def check_stream(
    path: PathLike,
    public_key: signature.PublicKey,
    *,
    progress: Optional[Progress] = None,
    open_output: Optional[Callable[[FileEntry], BinaryIO]] = None,
    base: Optional[BaseDir] = None,
    on_head: Optional[Callable[[Head], None]] = None,
) -> VerifyReport:
    """Verify the whole bundle in one pass, handing each file's bytes to open_output(entry) when given.

    A delta bundle's members that are not carried are read from `base` (an unpacked bundle) and checked as
    if they were in the stream; without a base, a delta verifies what it carries only (and says so), and
    cannot be unpacked."""
    with closing(_Stream(path, public_key, every_part=True, read_ahead=True)) as stream:
        buf = stream.buf
        current = layout.MANIFEST
        signed = False
        try:
            head, member = _read_head(buf)
            verified = check_signatures(public_key, head)
            partcheck.check_manifest(stream.parts_index, hashlib.sha256(head.manifest_bytes).hexdigest())
            signed = True
            if on_head is not None:
                on_head(head)
            manifest = verified.manifest
            expected = manifest.by_path()
            seen: set[str] = set(head.members)
            delta = Delta.from_bytes(head.delta, manifest) if head.delta is not None else None
            skipped = frozenset(delta.from_base) if delta is not None else frozenset()
            sources = _base_sources(manifest, delta, base, unpacking=open_output is not None)
            total, done = manifest.total_size, 0
            if delta is not None and base is None:
                total -= sum(expected[p].size for p in skipped)
            if progress:
                progress(0, total)
            while member is not None:
                current = member.name
                reason = tarstream.refuse_reason(member)
                if reason:
                    raise _member_error(member.name, reason)
                if member.name == layout.SIGNATURE_P256 and member.name not in seen:
                    raise _member_error(member.name, f"is allowed only as the third member, right after "
                                        f"{layout.SIGNATURE}")
                if member.name in layout.RESERVED or member.name in seen:
                    raise _member_error(member.name, "appears more than once")
                entry = expected.get(member.name)
                if entry is None:
                    raise _member_error(member.name, "is not in the signed manifest")
                if member.name in skipped:
                    raise _member_error(member.name, f"is carried, but {layout.DELTA} says it comes from the base")
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
                member = tarstream.read_header(buf)
            current = "the end of the archive"
            missing = [p for p in expected if p not in seen and p not in skipped]
            if missing:
                raise Error(
                    f"bundle is missing {len(missing)} member(s) listed in the manifest, first {missing[0]!r}",
                    context="verifying the bundle",
                    details=missing[:20],
                    hint=_TAMPERED,
                )
            tarstream.finish(buf)
            stream.stop_reading()  # it read to the end of the decompressed stream: the rest is this thread's
            stream.frames.drain()
            for path, src in sources.items():
                current = f"{path} (from the base {src})"
                done = _check_base_file(expected[path], src, open_output, done, total, progress)
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
        trusted = stream.parts_index
    warning = trusted.warning if trusted is not None else ""
    return VerifyReport(manifest.name, manifest.version, len(manifest.files), total, verified.fingerprint,
                        verified.key_type, verified.checked, verified.not_checked,
                        trusted.status if trusted is not None else "",
                        ((warning,) if warning else ()) + contents.warnings(manifest.trust),
                        delta_base=delta.base.describe() if delta is not None else "",
                        from_base_files=len(skipped), from_base_bytes=sum(expected[p].size for p in skipped),
                        base_checked=bool(sources) or (delta is not None and not skipped))


def _base_sources(manifest: Manifest, delta: Optional[Delta], base: Optional[BaseDir], unpacking: bool
                  ) -> dict[str, os.PathLike]:
    """{path: base file} of a delta's members taken from the base; refuses to unpack a delta without one."""
    if delta is None or not delta.from_base:
        return {}
    if base is not None:
        return base.sources(manifest, delta)
    if unpacking:
        raise Error(f"this is a delta bundle: {len(delta.from_base)} of its {len(manifest.files)} files are to "
                    f"be taken from its base, {delta.base.describe()}", context="unpacking a delta bundle",
                    hint="pass --base DIR, the directory that bundle was unpacked into (`installer apply` uses "
                    "the bundle its state directory holds), or carry the complete bundle")
    return {}


def _check_base_file(entry: FileEntry, src, open_output, done: int, total: int,
                     progress: Optional[Progress]) -> int:
    """Read one file a delta takes from its base, checking it as a member of the stream is checked."""
    digest = hashlib.sha256()
    out = open_output(entry) if open_output is not None else None
    size = 0
    try:
        with open(src, "rb") as f:
            for piece in iter(lambda: f.read(tarstream.CHUNK), b""):
                digest.update(piece)
                size += len(piece)
                if out is not None:
                    out.write(piece)
                done += len(piece)
                if progress:
                    progress(done, total)
    except OSError as e:
        raise Error(f"cannot read {src} (the base's copy of {entry.path}): {e.strerror}",
                    context="combining a delta bundle with its base") from None
    finally:
        if out is not None:
            out.close()
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise Error(f"the base's {src} is not the {entry.path} the signed manifest names (size or sha256 differ)",
                    context="combining a delta bundle with its base",
                    hint="the unpacked base was modified or damaged; unpack the base bundle again, or carry the "
                    "complete bundle")
    return done


def verify_bundle(path: PathLike, public_key: signature.PublicKey, progress: Optional[Progress] = None,
                  base: Optional[BaseDir] = None) -> VerifyReport:
    """Verify the signature(s), every member's size and sha256, no extra/missing/duplicate/unsafe members, no
    trailing bytes; a delta's members from `base` too."""
    return check_stream(path, public_key, progress=progress, base=base)
