"""Format 1 manifests (bundles built before format 2): their `components` map read into the typed model.

Format 1 had one `components` object of name: string. The bundler wrote, and nothing else ever wrote there:
  binary/<name>: version          rpm/<name>: version-release      image/<ref>: digest
  options: 'k=v,k=v'
  trust/binary/<name>: 'sha256 pin: spec|upstream|first-seen'
  trust/rpm/<name>: 'signed by <fingerprint>' | 'signature unchecked (gpgcheck: false)' | 'signature unrecorded'
  trust/image/<ref>: 'digest served by the upstream registry at lock time'
  repo/<name>: 'gpgcheck off' | 'key <fingerprint>[,<fingerprint>...]; repomd signed|unsigned|unchecked'
(bundles from before the trust of every artifact was recorded have only the first four). This module is the
one place that reads those texts, once, as the frozen format they are; an entry of another form maps to no
component and stays in the manifest's `legacy_components`, which `inspect` shows; a trust text of another
form is taken as `unrecorded` (a warning), its text kept as the detail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from contract.bundle.contents import Check, Component, ComponentKind, Contents, SourceKind, TrustEntry

_FPR = r"[0-9A-F]{40}"
_PIN = {"spec": Check.SPEC_PIN, "upstream": Check.UPSTREAM_DIGEST, "first-seen": Check.FIRST_SEEN}
_REPOMD = {"signed": Check.GPG_SIGNED, "unsigned": Check.UNSIGNED, "unchecked": Check.UNCHECKED}
_PIN_RE = re.compile(r"sha256 pin: (spec|upstream|first-seen)")
_SIGNED_RE = re.compile(rf"signed by ({_FPR})")
_REPO_RE = re.compile(rf"key ({_FPR}(?:,{_FPR})*); repomd (signed|unsigned|unchecked)")
RPM_UNCHECKED = "signature unchecked (gpgcheck: false)"
RPM_UNRECORDED = "signature unrecorded"
IMAGE_DIGEST = "digest served by the upstream registry at lock time"
REPO_OFF = "gpgcheck off"


def contents_from_v1(components: Mapping[str, str]) -> tuple[Contents, dict[str, str]]:
    """(the typed contents of a validated format 1 `components` map, its entries that map to nothing)."""
    comps: list[Component] = []
    trust: list[TrustEntry] = []
    options: dict[str, str] = {}
    unmapped: dict[str, str] = {}
    for key, value in components.items():
        kind, _, name = key.partition("/")
        if key == "options":
            parsed = _options(value)
            if parsed is None:
                unmapped[key] = value
            options.update(parsed or {})
        elif kind in ("binary", "rpm", "image") and name:
            comps.append(Component(ComponentKind(kind), name, value))
        elif kind == "trust" and name.partition("/")[0] in ("binary", "rpm", "image") and name.partition("/")[2]:
            source, _, item = name.partition("/")
            trust.append(_artifact_trust(SourceKind(source), item, value))
        elif kind == "repo" and name:
            trust += _repo_trust(name, value)
        else:
            unmapped[key] = value
    return Contents(tuple(comps), tuple(trust), options).sorted(), unmapped


def _options(value: str) -> dict[str, str] | None:
    if not value:
        return {}
    pairs = [p.partition("=") for p in value.split(",")]
    if any(not k or not sep for k, sep, _ in pairs):
        return None
    return {k: v for k, _, v in pairs}


def _artifact_trust(kind: SourceKind, name: str, text: str) -> TrustEntry:
    check, keys = Check.UNRECORDED, ()
    if kind is SourceKind.BINARY and _PIN_RE.fullmatch(text):
        check = _PIN[_PIN_RE.fullmatch(text).group(1)]
    elif kind is SourceKind.RPM and _SIGNED_RE.fullmatch(text):
        check, keys = Check.GPG_SIGNED, (_SIGNED_RE.fullmatch(text).group(1),)
    elif kind is SourceKind.RPM and text == RPM_UNCHECKED:
        check = Check.UNCHECKED
    elif kind is SourceKind.IMAGE and text == IMAGE_DIGEST:
        check = Check.REGISTRY_DIGEST
    return TrustEntry(kind, name, check, keys, text)


def _repo_trust(name: str, text: str) -> list[TrustEntry]:
    if text == REPO_OFF:
        return [TrustEntry(SourceKind.RPM_REPO, name, Check.UNCHECKED, (), text),
                TrustEntry(SourceKind.RPM_REPODATA, name, Check.UNCHECKED, (), text)]
    m = _REPO_RE.fullmatch(text)
    if m is None:
        return [TrustEntry(SourceKind.RPM_REPO, name, Check.UNRECORDED, (), text)]
    keys = tuple(m.group(1).split(","))
    repomd = _REPOMD[m.group(2)]
    return [TrustEntry(SourceKind.RPM_REPO, name, Check.GPG_SIGNED, keys, text),
            TrustEntry(SourceKind.RPM_REPODATA, name, repomd, keys if repomd is Check.GPG_SIGNED else (), text)]
