"""The signed manifest: every file's path, size, sha256 and mode, plus what the bundle is.

Format 2 (written since): `components` (a list: kind, name, version, paths), `trust` (how each source was
checked, typed: contract.bundle.contents) and `options`. Format 1 (read, never written): one `components` map
of name: string, mapped to the same typed model by contract.bundle.legacy; `legacy_components` keeps it as read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Union

from contract.bundle import contents as contents_mod
from contract.bundle import layout, legacy, signature
from contract.bundle.contents import Component, Contents, TrustEntry
from contract.errors import LocatedProblem, ValidationError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MODE = re.compile(r"^0[0-7]{3}$")
_RFC3339_UTC = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
_KEYS_V1 = ("format_version", "name", "version", "created", "spec_sha256", "lock_sha256", "components", "files")
_KEYS = {1: _KEYS_V1, 2: _KEYS_V1 + ("trust", "options")}
READ_VERSIONS = tuple(_KEYS)  # format_version values read; layout.FORMAT_VERSION is the one written
# signer: fingerprint of the Ed25519 signing key, so `inspect` names it without the key; signer_p256: the
# P-256 public key (base64 of its DER SubjectPublicKeyInfo) that made manifest.sig.p256, so a manifest
# verified with the Ed25519 key also vouches for the key of the second signature.
_OPTIONAL_KEYS = ("signer", "signer_p256")
_FILE_KEYS = ("path", "size", "sha256", "mode")
_HINT = "the bundle is damaged or was not written by a compatible bundler; rebuild it with `bundler build`"


def format_created(when: datetime) -> str:
    """RFC 3339 UTC with second precision, e.g. '2018-05-21T10:00:00Z'."""
    if when.tzinfo is None:
        raise ValueError("created time must be timezone-aware")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_created(text: str) -> datetime:
    """The datetime of an RFC 3339 UTC string as written by format_created."""
    if not _RFC3339_UTC.match(text):
        raise ValueError(f"not an RFC 3339 UTC time like 2018-05-21T10:00:00Z: {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class FileEntry:
    """One file in the bundle, as the signature vouches for it."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644


@dataclass(frozen=True)
class Manifest:
    """What a bundle contains; its canonical bytes are what manifest.sig signs."""

    format_version: int
    name: str
    version: str
    created: str
    spec_sha256: str
    lock_sha256: str
    components: tuple[Component, ...] = ()
    files: tuple[FileEntry, ...] = field(default_factory=tuple)
    signer: str = ""
    signer_p256: str = ""
    trust: tuple[TrustEntry, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    # format 1 only: the `components` map as read (components, trust and options are derived from it)
    legacy_components: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # typed contents only (a format 1 map goes through from_dict), stored in canonical order
        canonical = Contents(tuple(self.components), tuple(self.trust), dict(self.options)).sorted()
        object.__setattr__(self, "components", canonical.components)
        object.__setattr__(self, "trust", canonical.trust)
        object.__setattr__(self, "options", canonical.options)

    @property
    def contents(self) -> Contents:
        return Contents(tuple(self.components), tuple(self.trust), self.options)

    def to_dict(self) -> dict:
        """The JSON-ready form (modes as '0644' strings, files sorted as given); a format 1 manifest as read."""
        out = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "spec_sha256": self.spec_sha256,
            "lock_sha256": self.lock_sha256,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "mode": f"{f.mode:04o}"} for f in self.files
            ],
        }
        if self.format_version == 1:
            out["components"] = dict(self.legacy_components)
        else:
            out.update(self.contents.to_dict())
        if self.signer:
            out["signer"] = self.signer
        if self.signer_p256:
            out["signer_p256"] = self.signer_p256
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, fixed indentation, ASCII only, one trailing newline."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")

    def check(self) -> Manifest:
        """Raise ValidationError naming every bad field; return self when valid."""
        problems = _problems(self.to_dict())
        if problems:
            raise _error(problems)
        return self

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validate a decoded manifest (format 1 or 2) strictly and freeze it."""
        problems = _problems(data)
        if problems:
            raise _error(problems)
        if data["format_version"] == 1:
            contents, _ = legacy.contents_from_v1(data["components"])
            legacy_components = dict(data["components"])
        else:
            contents, legacy_components = Contents.from_dict(data), {}
        return cls(
            format_version=data["format_version"],
            name=data["name"],
            version=data["version"],
            created=data["created"],
            spec_sha256=data["spec_sha256"],
            lock_sha256=data["lock_sha256"],
            components=contents.components,
            files=tuple(
                FileEntry(f["path"], f["size"], f["sha256"], int(f["mode"], 8)) for f in data["files"]
            ),
            signer=data.get("signer", ""),
            signer_p256=data.get("signer_p256", ""),
            trust=contents.trust,
            options=contents.options,
            legacy_components=legacy_components,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate manifest bytes as read from a bundle."""
        try:
            decoded = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValidationError(f"{layout.MANIFEST} is not valid JSON: {e}", hint=_HINT) from None
        return cls.from_dict(decoded)

    @property
    def total_size(self) -> int:
        """Sum of every file's size in bytes."""
        return sum(f.size for f in self.files)

    def by_path(self) -> dict[str, FileEntry]:
        """The files keyed by path."""
        return {f.path: f for f in self.files}

    def versions(self) -> dict[str, str]:
        """{'<kind>/<name>': version} of the components, e.g. {'binary/etcd': '3.3.1'}."""
        return contents_mod.versions(self.components)

    def unmapped(self) -> dict[str, str]:
        """The entries of a format 1 `components` map that name no component, trust or options ({} for format 2)."""
        return legacy.contents_from_v1(self.legacy_components)[1] if self.format_version == 1 else {}

    def p256_signer(self) -> Optional[signature.P256PublicKey]:
        """The P-256 key that made manifest.sig.p256, or None when the bundle has no second signature."""
        return signature.decode_p256_public(self.signer_p256) if self.signer_p256 else None


def _error(problems: list[LocatedProblem]) -> ValidationError:
    """One ValidationError whose message names the first bad field and whose details list them all."""
    n = len(problems)
    more = f" (and {n - 1} more)" if n > 1 else ""
    return ValidationError(
        f"{layout.MANIFEST}: {problems[0]}{more}",
        context=f"validating {layout.MANIFEST}",
        details=[str(p) for p in problems],
        hint=_HINT,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problems(data: Any) -> list[LocatedProblem]:
    """Every located problem of a decoded manifest, in document order."""
    if not isinstance(data, dict):
        return [LocatedProblem("", "must be a JSON object")]
    version = data.get("format_version")
    if not _is_int(version) or version not in _KEYS:
        expected = " or ".join(str(v) for v in READ_VERSIONS)
        return [LocatedProblem("format_version", f"unsupported {version!r}, expected {expected}",
                               hint="use an installer matching the bundler")]
    keys = _KEYS[version]
    out: list[LocatedProblem] = []
    for key in sorted(set(data) - set(keys) - set(_OPTIONAL_KEYS)):
        out.append(LocatedProblem(key, "unknown field"))
    for key in keys:
        if key not in data:
            out.append(LocatedProblem(key, "missing"))
    if out:
        return out

    for key in ("name", "version"):
        if not isinstance(data[key], str) or not data[key]:
            out.append(LocatedProblem(key, "must be a non-empty string"))
    created = data["created"]
    if not isinstance(created, str):
        out.append(LocatedProblem("created", "must be a string"))
    else:
        try:
            parse_created(created)
        except ValueError as e:
            out.append(LocatedProblem("created", str(e)))
    if "signer" in data and not (isinstance(data["signer"], str) and data["signer"].startswith("SHA256:")):
        out.append(LocatedProblem("signer", "must be a key fingerprint 'SHA256:...'"))
    if "signer_p256" in data:
        out.extend(_signer_p256_problems(data["signer_p256"]))
    for key in ("spec_sha256", "lock_sha256"):
        if not isinstance(data[key], str) or not _HEX64.match(data[key]):
            out.append(LocatedProblem(key, "must be 64 lowercase hex digits"))
    files = data["files"]
    if not isinstance(files, list):
        out.append(LocatedProblem("files", "must be a list"))
        return out
    if version == 1:
        out += _v1_components_problems(data["components"])
    else:
        out += contents_mod.problems(data, {f["path"] for f in files if isinstance(f, dict)
                                            and isinstance(f.get("path"), str)})
    seen: set[str] = set()
    previous: Optional[str] = None
    for i, entry in enumerate(files):
        out.extend(_file_problems(f"files[{i}]", entry))
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            continue
        if path in seen:
            out.append(LocatedProblem(f"files[{i}].path", f"duplicate path {path!r}"))
        elif previous is not None and path < previous:
            out.append(LocatedProblem(f"files[{i}].path", f"{path!r} is out of order (files are sorted by path)"))
        seen.add(path)
        previous = path
    # A path that is also a directory of another path cannot be unpacked.
    for i, entry in enumerate(files):
        path = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(path, str):
            parts = path.split("/")
            for n in range(1, len(parts)):
                parent = "/".join(parts[:n])
                if parent in seen:
                    out.append(LocatedProblem(f"files[{i}].path", f"{path!r} lies under file {parent!r}"))
    return out


def _v1_components_problems(components: Any) -> list[LocatedProblem]:
    """Format 1: `components` is an object of name: non-empty string."""
    if not isinstance(components, dict):
        return [LocatedProblem("components", "must be an object of name: version")]
    return [LocatedProblem(f"components.{name}", "must map a name to a non-empty version string")
            for name, version in components.items() if not name or not isinstance(version, str) or not version]


def _signer_p256_problems(value: Any) -> list[LocatedProblem]:
    """The problem of a signer_p256 value, if any: it must be the canonical base64 of a P-256 public key."""
    if not isinstance(value, str) or not value:
        return [LocatedProblem("signer_p256", "must be a non-empty string")]
    try:
        signature.decode_p256_public(value)
    except ValueError as e:
        return [LocatedProblem("signer_p256", f"must be base64 of a DER P-256 SubjectPublicKeyInfo, but {e}")]
    return []


def _file_problems(where: str, entry: Any) -> list[LocatedProblem]:
    """The problems of one files[] entry."""
    if not isinstance(entry, dict):
        return [LocatedProblem(where, "must be an object with path, size, sha256, mode")]
    out = [LocatedProblem(f"{where}.{k}", "unknown field") for k in sorted(set(entry) - set(_FILE_KEYS))]
    out += [LocatedProblem(f"{where}.{k}", "missing") for k in _FILE_KEYS if k not in entry]
    if out:
        return out
    problem = layout.path_problem(entry["path"])
    if problem is None and entry["path"] in layout.RESERVED:
        problem = "is reserved for the archive itself"
    if problem:
        out.append(LocatedProblem(f"{where}.path", f"{entry['path']!r}: {problem}"))
    if not _is_int(entry["size"]) or entry["size"] < 0:
        out.append(LocatedProblem(f"{where}.size", "must be an integer >= 0"))
    if not isinstance(entry["sha256"], str) or not _HEX64.match(entry["sha256"]):
        out.append(LocatedProblem(f"{where}.sha256", "must be 64 lowercase hex digits"))
    if not isinstance(entry["mode"], str) or not _MODE.match(entry["mode"]):
        out.append(LocatedProblem(f"{where}.mode", "must be an octal permission string like '0644' "
                                  "(no setuid, setgid or sticky bits)"))
    return out


def now_created(clock: Optional[Union[datetime, str]] = None) -> str:
    """The created field for `clock` (a datetime or an RFC 3339 string), or for now."""
    if clock is None:
        return format_created(datetime.now(timezone.utc))
    if isinstance(clock, str):
        parse_created(clock)
        return clock
    return format_created(clock)
