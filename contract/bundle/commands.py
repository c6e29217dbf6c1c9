"""The bodies of `verify` and `unpack`: the one check both programs run, so they agree on what "verified" means.

Each CLI declares the command with typer (contract/ has no command line) using the texts here, and calls
`verify` or `unpack`; what they print (text and --json) and their exit codes are defined once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from contract import bundle as fmt
from contract.bundle import layout, partcheck
from contract.bundle.delta import BaseDir
from contract.cliutil import emit, guarded
from contract.progress import bar

VERIFY_HELP = ("Check the signature, then every member's size and sha256, and that nothing else is in the bundle; "
               "a split bundle's parts are each checked against the signed parts index first. Given one part: "
               "check that part.")
VERIFY_BUNDLE_HELP = ("The bundle file, the directory of its parts or their index (the whole bundle); or one part "
                      "(.partNNN: that part alone, against the signed index).")
UNPACK_HELP = "Verify and unpack; nothing appears at DEST unless the whole bundle verified."
UNPACK_BUNDLE_HELP = "The bundle file, its first (or any) part, or the directory of parts."
DEST_HELP = "New or empty directory; left untouched unless all verifies."
BASE_HELP = ("A delta bundle's base: the directory its base bundle was unpacked into (`installer unpack`, or "
             "the bundle-* directory of the installer's state). The files the delta does not carry are read from "
             "there and checked against the delta's signed manifest.")
PUB_HELP = ("The signer's public key: bundle.pub (Ed25519; checks the P-256 signature too when the bundle has "
            "one) or bundle-p256.pub (P-256 only).")


def verify(bundle: Path, pub: Path, as_json: bool, base: Optional[Path] = None) -> None:
    """Verify the whole bundle, or given one part (a .partNNN file), that part against the signed index; a
    delta with its base when one is given."""
    if layout.parse_part_filename(bundle.name) is not None and not bundle.is_dir():
        _verify_part(bundle, pub, as_json)
        return
    _verify_or_unpack(bundle, pub, None, as_json, base)


def unpack(bundle: Path, pub: Path, dest: Path, as_json: bool, base: Optional[Path] = None) -> None:
    """Verify and unpack into dest in one streaming pass (a delta combined with its base)."""
    _verify_or_unpack(bundle, pub, dest, as_json, base)


def bundle_text(d: dict) -> str:
    text = (f"{d['bundle']}: OK: {d['name']} {d['version']}, {d['files']} files, {d['bytes']} bytes verified; "
            f"signed by {d['fingerprint']} ({d['key_type']}: {', '.join(d['signatures_checked'])})")
    if d["signatures_not_checked"]:
        text += (f"; {', '.join(d['signatures_not_checked'])} (Ed25519) not checked: no Ed25519 key given "
                 "(bundle.pub)")
    if d.get("parts_index"):
        text += f"; parts index {d['parts_index']}"
    delta = d.get("delta")
    if delta:
        text += (f"; a delta of {delta['base']}: {delta['from_base_files']} files ({delta['from_base_bytes']} bytes) "
                 + ("taken from the base and checked" if delta["base_checked"]
                    else "to take from the base NOT checked (pass --base DIR to check them)"))
    text += f"; unpacked into {d['dest']}" if d.get("dest") else ""
    return "\n".join([text] + [f"WARNING: {w}" for w in d.get("warnings", [])])


def part_text(d: dict) -> str:
    return "\n".join([f"{d['part']}: OK: part {d['number']} of {d['count']} of {d['bundle_file']}, {d['size']} "
                      f"bytes, sha256 as the parts index {d['parts_index']} says"
                      + (f" (key {d['fingerprint']})" if d["fingerprint"] else "")]
                     + [f"WARNING: {w}" for w in d["warnings"]])


def _verify_part(part: Path, pub: Path, as_json: bool) -> None:
    """One part against its bundle's signed index, as it comes off the medium, before the others are there."""

    def body() -> None:
        r = partcheck.check_part(part, fmt.load_public_key(pub))
        warning = r.index.warning
        d = {"part": str(part), "ok": True, "bundle_file": r.bundle, "number": r.number, "count": r.count,
             "size": r.size, "sha256": r.sha256, "parts_index": r.index.status, "fingerprint": r.index.fingerprint,
             "warnings": [warning] if warning else []}
        emit(d, as_json, part_text)

    guarded(body, as_json=as_json)


def _verify_or_unpack(bundle: Path, pub: Path, dest: Optional[Path], as_json: bool, base: Optional[Path]) -> None:
    """One streaming pass: verify every member, and with dest also write them (renamed into place at the end)."""

    def body() -> None:
        key = fmt.load_public_key(pub)
        base_dir = BaseDir(base) if base is not None else None
        with bar("unpack" if dest else "verify") as progress:
            r = (fmt.unpack_bundle(bundle, key, dest, progress=progress, base=base_dir) if dest
                 else fmt.verify_bundle(bundle, key, progress=progress, base=base_dir))
        d = {"bundle": str(bundle), "ok": True, "name": r.name, "version": r.version, "files": r.files,
             "bytes": r.bytes, "fingerprint": r.fingerprint, "key_type": r.key_type,
             "signatures_checked": list(r.checked), "signatures_not_checked": list(r.not_checked),
             "parts_index": r.parts_index or None, "warnings": list(r.warnings),
             "delta": {"base": r.delta_base, "from_base_files": r.from_base_files,
                       "from_base_bytes": r.from_base_bytes, "base_checked": r.base_checked}
             if r.delta_base else None}
        if dest:
            d["dest"] = str(dest)
        emit(d, as_json, bundle_text)

    guarded(body, as_json=as_json)
