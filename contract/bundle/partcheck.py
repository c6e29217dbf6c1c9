"""Split parts checked one by one against the signed parts index, before anything is joined.

The index (<bundle>.parts.json) lists every part's name, size and sha256 and names the bundle's signed
manifest (manifest_sha256) and its P-256 signer (signer_p256). <index>.sig (raw Ed25519) and <index>.sig.p256
(DER ECDSA P-256 / SHA-256) sign its exact bytes with the bundle's keys, as manifest.sig and manifest.sig.p256
sign the manifest. An Ed25519 key checks .sig and, when the index names a P-256 signer, .sig.p256 with that
key too; a P-256 key checks .sig.p256 alone and must be the key the index names.

An index written before indexes were signed (no manifest_sha256, no signature files) is still read, with a
warning: its parts are then checked for damage only, and the joined stream is vouched for by the manifest's
signature alone, as it always was (nothing unsigned is ever accepted). An index that names its manifest but
whose signatures are gone is refused, so removing them cannot turn a signed index into an unsigned one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

from contract.bundle import layout, parts, signature
from contract.bundle.parts import PartsIndex
from contract.digest import sha256_and_size
from contract.errors import Error

PathLike = Union[str, "os.PathLike[str]"]
_COPY_AGAIN = "copy the bundle's files again from the build host (or rebuild it)"
_CHECKING_INDEX = "checking the signature of the parts index"
_CHECKING_PARTS = "checking every part against the signed parts index, before joining them"
UNSIGNED = "unsigned"


@dataclass(frozen=True)
class TrustedIndex:
    """A parts index and how far it is vouched for: signed (which files verified, with which key) or not."""

    index: PartsIndex
    path: Path
    signed: bool
    fingerprint: str = ""  # the key that verified it; "" when unsigned
    checked: tuple[str, ...] = ()  # the signature files that verified

    @property
    def status(self) -> str:
        """'signed: <files>' or 'unsigned'."""
        return f"signed: {', '.join(self.checked)}" if self.signed else UNSIGNED

    @property
    def warning(self) -> str:
        """What an unsigned index means, or ''."""
        if self.signed:
            return ""
        return (f"parts index {self.path.name} is unsigned (the bundle was split before parts indexes were "
                "signed): its parts are checked for damage only; the manifest's signature still vouches for "
                "every member once they are joined")

    def count(self) -> int:
        return len(self.index.parts)


def _read_optional(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Error(f"cannot read {path}: {e.strerror}", context=_CHECKING_INDEX, hint=_COPY_AGAIN) from None


def _named_p256(index: PartsIndex, path: Path) -> Optional[signature.P256PublicKey]:
    if not index.signer_p256:
        return None
    try:
        return signature.decode_p256_public(index.signer_p256)
    except ValueError as e:
        raise Error(f"parts index {path} is malformed: its signer_p256 {e}", hint=_COPY_AGAIN) from None


def load_index(located: parts.Located, public_key: signature.PublicKey) -> TrustedIndex:
    """The located split bundle's index, its signature(s) checked with `public_key` (see the module docstring)."""
    assert located.index_path is not None
    path = located.index_path
    data = _read_optional(path)
    if data is None:
        raise Error(f"parts index {path} does not exist", hint=f"copy {path.name} along with the parts; {_COPY_AGAIN}")
    index = PartsIndex.parse(data, path)  # the very bytes the signatures are checked over
    sig_name, p256_name = layout.parts_index_signature_filenames(index.bundle)
    sig, sig_p256 = _read_optional(path.parent / sig_name), _read_optional(path.parent / p256_name)
    if sig is None and sig_p256 is None:
        if index.signed_format:
            raise Error(f"parts index {path.name} names its bundle's manifest, so it was signed, but its signature "
                        f"files ({sig_name}, {p256_name}) are missing", context=_CHECKING_INDEX,
                        hint=f"copy {sig_name} (and {p256_name}) along with the index and the parts; {_COPY_AGAIN}")
        return TrustedIndex(index, path, signed=False)
    if not index.signed_format:
        raise Error(f"parts index {path.name} has signature files beside it but names no manifest "
                    "(manifest_sha256): it is not the index they signed", context=_CHECKING_INDEX, hint=_COPY_AGAIN)
    fpr = signature.fingerprint(public_key)
    named = _named_p256(index, path)
    if signature.is_p256(public_key):
        if sig_p256 is None:
            raise Error(f"parts index {path.name} carries only an Ed25519 signature ({sig_name}), so the P-256 key "
                        f"{fpr} cannot check it", context=_CHECKING_INDEX,
                        hint=f"check it with {signature.PUBLIC_KEY_FILE} (the Ed25519 key)")
        signature.verify(public_key, data, sig_p256, what=path.name, member=p256_name)
        if named is None or not signature.same_key(named, public_key):
            names = f"names {signature.fingerprint(named)}" if named is not None else "names no P-256 key"
            raise Error(f"parts index {path.name} {names} as its P-256 signer, but {p256_name} verified with {fpr}",
                        context=_CHECKING_INDEX, hint=f"the index and its signatures come from different bundles; "
                        f"{_COPY_AGAIN}")
        return TrustedIndex(index, path, True, fpr, (p256_name,))
    if sig is None:
        raise Error(f"{sig_name} (the Ed25519 signature of the parts index) is missing beside {path.name}",
                    context=_CHECKING_INDEX, hint=f"copy it along with the index; or check with "
                    f"{signature.P256_PUBLIC_KEY_FILE}; {_COPY_AGAIN}")
    signature.verify(public_key, data, sig, what=path.name, member=sig_name)
    checked = (sig_name,)
    if named is not None:
        if sig_p256 is None:
            raise Error(f"{p256_name} is missing beside {path.name}, whose signed content names the P-256 signer "
                        f"{signature.fingerprint(named)}", context=_CHECKING_INDEX, hint=_COPY_AGAIN)
        signature.verify(named, data, sig_p256, what=path.name, member=p256_name)
        checked += (p256_name,)
    elif sig_p256 is not None:
        raise Error(f"{p256_name} lies beside {path.name}, but the signed index names no P-256 signer to check it "
                    "with", context=_CHECKING_INDEX, hint=_COPY_AGAIN)
    return TrustedIndex(index, path, True, fpr, checked)


def _part_problem(index: PartsIndex, i: int, path: Path) -> Optional[str]:
    """Why the file at `path` is not part i of the index, or None when it is (size and sha256)."""
    part = index.parts[i]
    if not path.is_file():
        return "is missing" if not path.exists() else "is not a regular file"
    size = path.stat().st_size
    if size != part.size:
        return f"is {size} bytes, the index says {part.size}: truncated, or a part of another build"
    try:
        digest, _ = sha256_and_size(path)
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    if digest == part.sha256:
        return None
    other = next((j for j, q in enumerate(index.parts) if j != i and q.sha256 == digest), None)
    if other is not None:
        return f"holds the content of part {other + 1} ({index.parts[other].name}): parts swapped or copied over"
    return "has another sha256 than the index says: modified, damaged, or a part of another bundle"


@dataclass(frozen=True)
class PartReport:
    """One part that matched the index: which one it is (number of count, 1-based)."""

    name: str
    bundle: str
    number: int
    count: int
    size: int
    sha256: str
    index: TrustedIndex


def check_part(path: PathLike, public_key: signature.PublicKey) -> PartReport:
    """Check one part file against its bundle's signed index (beside it): name, position, size and sha256."""
    p = Path(path)
    if layout.parse_part_filename(p.name) is None:
        raise Error(f"{p.name} is not named as a part of a split bundle (<bundle>.partNNN)",
                    context="checking a part", hint="pass a .partNNN file, or the bundle, its index or directory")
    trusted = load_index(parts.locate(p), public_key)
    index, n = trusted.index, trusted.count()
    i = index.position(p.name)
    if i is None:
        raise Error(f"{p.name} is not a part of {index.bundle}: its signed index lists {n} parts "
                    f"({index.parts[0].name} to {index.parts[-1].name})", context="checking a part",
                    hint=f"it is left over from another build; remove it, or copy the right index; {_COPY_AGAIN}")
    problem = _part_problem(index, i, p)
    if problem:
        raise Error(f"part {p.name} (part {i + 1} of {n}) {problem}", context="checking a part against the "
                    f"{'signed' if trusted.signed else 'unsigned'} parts index", hint=_COPY_AGAIN)
    part = index.parts[i]
    return PartReport(p.name, index.bundle, i + 1, n, part.size, part.sha256, trusted)


def check_parts(trusted: TrustedIndex) -> None:
    """Every part the index lists (missing, truncated, swapped, modified, foreign) and no part it does not list;
    one Error naming every bad part."""
    index, directory, n = trusted.index, trusted.path.parent, trusted.count()
    bad = []
    for i, part in enumerate(index.parts):
        problem = _part_problem(index, i, directory / part.name)
        if problem:
            bad.append((part.name, f"{part.name} (part {i + 1} of {n}) {problem}"))
    for extra in parts._existing_parts(directory, index.bundle):
        if index.position(extra.name) is None:
            bad.append((extra.name, f"{extra.name} is not in the index, which lists {n} parts: a part of another "
                        "build; remove it"))
    if bad:
        raise Error(f"{len(bad)} bad part(s) of {index.bundle}, nothing joined: {', '.join(b[0] for b in bad)}",
                    context=_CHECKING_PARTS, details=[b[1] for b in bad], hint=_COPY_AGAIN)


def open_checked(path: PathLike, public_key: Optional[signature.PublicKey], *, every_part: bool):
    """(reader of the compressed stream, TrustedIndex or None): a split bundle's index is checked first when a
    key is given, and with every_part each part against it before the reader joins them."""
    located = parts.locate(path)
    if located.index is None or public_key is None:
        return parts.open_located(located), None
    trusted = load_index(located, public_key)
    if every_part:
        check_parts(trusted)
    return parts.open_located(replace(located, index=trusted.index)), trusted


def check_manifest(trusted: Optional[TrustedIndex], manifest_sha256: str) -> None:
    """Error unless the signed index names the manifest the joined parts begin with."""
    if trusted is None or not trusted.signed or trusted.index.manifest_sha256 == manifest_sha256:
        return
    raise Error(f"the signed parts index {trusted.path.name} names manifest sha256 "
                f"{trusted.index.manifest_sha256[:16]}…, but the parts begin with manifest {manifest_sha256[:16]}…",
                context="verifying the bundle", hint=f"the index and the parts come from different bundles; "
                f"{_COPY_AGAIN}")
