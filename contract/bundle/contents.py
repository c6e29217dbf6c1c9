"""What a bundle is made of and how each of its sources was checked: the manifest's typed `components`, `trust`
and `options` (format 2), their strict validation, and the findings (warnings, notes) every reader shows.

A component is what a host ends up running or reading (a release file, an RPM, an image, a wheel, the static
installer): its name, version, kind and the bundle paths that make it. A trust entry says how one source was
checked before it went into the bundle, as a `Check` (an enum: readers branch on it, never on the `detail`,
which is free text for people). A reader decides what to warn about from `LEVEL`, here, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from contract.errors import LocatedProblem


class ComponentKind(str, Enum):
    BINARY = "binary"  # a release file under binaries/ (a tarball stored as plain tar, or an executable)
    RPM = "rpm"  # a package of the bundle's yum repositories
    IMAGE = "image"  # an image of the OCI layout (its blobs)
    WHEEL = "wheel"  # a Python wheel of the installer or of its dependencies
    EXECUTABLE = "executable"  # the static installer executable


class SourceKind(str, Enum):
    BINARY = "binary"
    RPM = "rpm"
    IMAGE = "image"
    WHEEL = "wheel"
    EXECUTABLE = "executable"
    RPM_REPO = "rpm-repo"  # a yum repository: how its packages' signatures were checked
    RPM_REPODATA = "rpm-repodata"  # a yum repository's repodata/repomd.xml: its signature (.asc)


COMPONENT_SOURCES = frozenset(k.value for k in ComponentKind)  # source kinds that name a component


class Check(str, Enum):
    """How a source was checked when the bundle was built (or locked)."""

    GPG_SIGNED = "gpg-signed"  # an OpenPGP signature verified with a pinned key (`keys`: its fingerprints)
    SPEC_PIN = "spec-pin"  # a sha256 the spec pins
    UPSTREAM_DIGEST = "upstream-digest"  # a sha256 upstream publishes beside the file (.sha256, SHA256SUMS)
    REGISTRY_DIGEST = "registry-digest"  # the digest the registry served at lock time; every blob checked against it
    FIRST_SEEN = "first-seen"  # nothing upstream to check against: pinned by its sha256 when first downloaded
    BUILT = "built"  # built by the bundler from its own sources
    UNSIGNED = "unsigned"  # the source publishes no signature (e.g. repomd.xml without .asc)
    UNCHECKED = "unchecked"  # the spec turns the check off (gpgcheck: false)
    UNRECORDED = "unrecorded"  # the lock records no check (made before checks were recorded)


class Level(str, Enum):
    OK = "ok"
    NOTE = "note"
    WARNING = "warning"


# what every reader (verify, inspect, the evidence report) says about a check; OK ones are not called out
LEVEL = {Check.UNCHECKED: Level.WARNING, Check.UNRECORDED: Level.WARNING, Check.FIRST_SEEN: Level.NOTE}
FINDING_TEXT = {
    Check.UNCHECKED: "not checked, the spec turns the check off (gpgcheck: false)",
    Check.UNRECORDED: "no check recorded (the lock predates recorded checks: re-lock with `bundler lock`)",
    Check.FIRST_SEEN: "pinned when first seen (nothing published upstream to check it against)",
}

_FPR = re.compile(r"^[0-9A-F]{40}$")
_COMPONENT_KEYS = ("kind", "name", "version", "paths")
_TRUST_KEYS = ("kind", "name", "check", "keys", "detail")


@dataclass(frozen=True)
class Component:
    """One thing the bundle brings, and the bundle paths it is made of."""

    kind: ComponentKind
    name: str
    version: str
    paths: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """'<kind>/<name>', e.g. 'binary/etcd': how reports and the version table name it."""
        return f"{self.kind.value}/{self.name}"

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "name": self.name, "version": self.version, "paths": list(self.paths)}


@dataclass(frozen=True)
class TrustEntry:
    """How one source (a component, or a yum repository and its metadata) was checked."""

    kind: SourceKind
    name: str
    check: Check
    keys: tuple[str, ...] = ()  # gpg-signed: the fingerprints of the pinned key(s) it verified with
    detail: str = ""  # for people only; no reader branches on it

    @property
    def key(self) -> str:
        """'<kind>/<name>', e.g. 'rpm/haproxy', 'rpm-repo/base'."""
        return f"{self.kind.value}/{self.name}"

    @property
    def level(self) -> Level:
        return LEVEL.get(self.check, Level.OK)

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "name": self.name, "check": self.check.value, "keys": list(self.keys),
                "detail": self.detail}


@dataclass(frozen=True)
class Finding:
    """A warning or note about the sources with one check, as every reader words it."""

    level: Level
    check: Check
    sources: tuple[str, ...]  # TrustEntry.key of each

    @property
    def line(self) -> str:
        return f"{FINDING_TEXT[self.check]}: {', '.join(self.sources)}"


@dataclass(frozen=True)
class Contents:
    """The typed part of a manifest: components, trust, options (in canonical order once sorted())."""

    components: tuple[Component, ...] = ()
    trust: tuple[TrustEntry, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, items, cls in (("components", self.components, Component), ("trust", self.trust, TrustEntry)):
            bad = [i for i in items if not isinstance(i, cls)]
            if bad:
                raise TypeError(f"{what} must hold {cls.__name__} objects, not {type(bad[0]).__name__}")

    def sorted(self) -> Contents:
        """The same contents in the order the manifest stores them (by kind, name, version)."""
        return Contents(
            tuple(sorted(self.components, key=lambda c: (c.kind.value, c.name, c.version))),
            tuple(sorted(self.trust, key=lambda t: (t.kind.value, t.name))),
            dict(sorted(self.options.items())))

    def to_dict(self) -> dict:
        return {"components": [c.to_dict() for c in self.components], "trust": [t.to_dict() for t in self.trust],
                "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contents:
        """From a decoded format 2 manifest that validated (problems() found nothing)."""
        return cls(
            tuple(Component(ComponentKind(c["kind"]), c["name"], c["version"], tuple(c["paths"]))
                  for c in data["components"]),
            tuple(TrustEntry(SourceKind(t["kind"]), t["name"], Check(t["check"]), tuple(t["keys"]), t["detail"])
                  for t in data["trust"]),
            dict(data["options"]))


def versions(components: Iterable[Component]) -> dict[str, str]:
    """{'<kind>/<name>': version}; of several versions of one name (wheels for several Pythons), the last listed."""
    return {c.key: c.version for c in components}


def findings(trust: Iterable[TrustEntry]) -> list[Finding]:
    """One finding per check that is called out (warnings first, then notes), naming its sources in order."""
    by_check: dict[Check, list[str]] = {}
    for t in trust:
        if t.level is not Level.OK:
            by_check.setdefault(t.check, []).append(t.key)
    order = sorted(by_check, key=lambda c: (LEVEL[c] is not Level.WARNING, list(Check).index(c)))
    return [Finding(LEVEL[c], c, tuple(by_check[c])) for c in order]


def warnings(trust: Iterable[TrustEntry]) -> tuple[str, ...]:
    """The warning lines (verify, inspect and the evidence report print them after 'WARNING: ')."""
    return tuple(f.line for f in findings(trust) if f.level is Level.WARNING)


def notes(trust: Iterable[TrustEntry]) -> tuple[str, ...]:
    return tuple(f.line for f in findings(trust) if f.level is Level.NOTE)


# ------------------------------------------------------------------ validation of a decoded format 2 manifest


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _enum_problem(where: str, value: Any, enum: type[Enum]) -> Optional[LocatedProblem]:
    allowed = [e.value for e in enum]
    if value not in allowed:
        return LocatedProblem(where, f"{value!r} is not one of {', '.join(allowed)}")
    return None


def _fields(where: str, entry: Any, keys: tuple[str, ...]) -> list[LocatedProblem]:
    if not isinstance(entry, dict):
        return [LocatedProblem(where, f"must be an object with {', '.join(keys)}")]
    out = [LocatedProblem(f"{where}.{k}", "unknown field") for k in sorted(set(entry) - set(keys))]
    return out + [LocatedProblem(f"{where}.{k}", "missing") for k in keys if k not in entry]


def problems(data: Mapping[str, Any], files: set[str]) -> list[LocatedProblem]:
    """Every located problem of the components, trust and options of a format 2 manifest (files: its paths)."""
    out: list[LocatedProblem] = []
    components = data["components"]
    kinds_names: set[tuple[str, str]] = set()
    if not isinstance(components, list):
        out.append(LocatedProblem("components", "must be a list of {kind, name, version, paths}"))
    else:
        previous: Optional[tuple] = None
        for i, c in enumerate(components):
            where = f"components[{i}]"
            found = _fields(where, c, _COMPONENT_KEYS)
            if not found:
                found = _component_problems(where, c, files)
            out += found
            if found:
                continue
            order = (c["kind"], c["name"], c["version"])
            if previous is not None and order <= previous:
                out.append(LocatedProblem(where, f"{c['kind']}/{c['name']} {c['version']} is "
                                          + ("a duplicate" if order == previous else "out of order")
                                          + " (components are sorted by kind, name, version)"))
            previous = order
            kinds_names.add((c["kind"], c["name"]))
    out += _trust_problems(data["trust"], kinds_names, components_ok=not out)
    options = data["options"]
    if not isinstance(options, dict):
        out.append(LocatedProblem("options", "must be an object of name: value"))
    else:
        out += [LocatedProblem(f"options.{k}", "must map a name to a string")
                for k, v in options.items() if not k or not isinstance(v, str)]
    return out


def _component_problems(where: str, c: dict, files: set[str]) -> list[LocatedProblem]:
    out = []
    problem = _enum_problem(f"{where}.kind", c["kind"], ComponentKind)
    if problem:
        out.append(problem)
    for key in ("name", "version"):
        if not _is_str(c[key]):
            out.append(LocatedProblem(f"{where}.{key}", "must be a non-empty string"))
    paths = c["paths"]
    if not isinstance(paths, list) or not paths:
        return out + [LocatedProblem(f"{where}.paths", "must be a non-empty list of the bundle paths that make it")]
    for j, p in enumerate(paths):
        if not isinstance(p, str) or p not in files:
            out.append(LocatedProblem(f"{where}.paths[{j}]", f"{p!r} is not a file of the bundle (files[])"))
        elif j and isinstance(paths[j - 1], str) and paths[j - 1] >= p:
            out.append(LocatedProblem(f"{where}.paths[{j}]", f"{p!r} is a duplicate or out of order (sorted)"))
    return out


def _trust_problems(trust: Any, kinds_names: set[tuple[str, str]], components_ok: bool) -> list[LocatedProblem]:
    if not isinstance(trust, list):
        return [LocatedProblem("trust", "must be a list of {kind, name, check, keys, detail}")]
    out: list[LocatedProblem] = []
    covered: set[tuple[str, str]] = set()
    previous: Optional[tuple] = None
    for i, t in enumerate(trust):
        where = f"trust[{i}]"
        found = _fields(where, t, _TRUST_KEYS)
        if not found:
            found = _entry_problems(where, t)
        out += found
        if found:
            continue
        order = (t["kind"], t["name"])
        if previous is not None and order <= previous:
            out.append(LocatedProblem(where, f"{t['kind']}/{t['name']} is "
                                      + ("a duplicate" if order == previous else "out of order")
                                      + " (trust is sorted by kind, name)"))
        previous = order
        if t["kind"] in COMPONENT_SOURCES:
            covered.add(order)
            if components_ok and order not in kinds_names:
                out.append(LocatedProblem(f"{where}.name", f"no component {t['kind']}/{t['name']} in components[]"))
    if components_ok and not out:
        out += [LocatedProblem("trust", f"no entry says how {kind}/{name} was checked")
                for kind, name in sorted(kinds_names - covered)]
    return out


def _entry_problems(where: str, t: dict) -> list[LocatedProblem]:
    out = [p for p in (_enum_problem(f"{where}.kind", t["kind"], SourceKind),
                       _enum_problem(f"{where}.check", t["check"], Check)) if p]
    if not _is_str(t["name"]):
        out.append(LocatedProblem(f"{where}.name", "must be a non-empty string"))
    if not isinstance(t["detail"], str):
        out.append(LocatedProblem(f"{where}.detail", "must be a string"))
    keys = t["keys"]
    if not isinstance(keys, list):
        out.append(LocatedProblem(f"{where}.keys", "must be a list of key fingerprints"))
        return out
    for j, k in enumerate(keys):
        if not isinstance(k, str) or not _FPR.match(k):
            out.append(LocatedProblem(f"{where}.keys[{j}]", f"{k!r} is not a full OpenPGP fingerprint "
                                      "(40 upper-case hex digits)"))
    if t["check"] == Check.GPG_SIGNED.value and not keys:
        out.append(LocatedProblem(f"{where}.keys", "a gpg-signed source names the key(s) it verified with"))
    elif t["check"] != Check.GPG_SIGNED.value and keys and t["check"] in [c.value for c in Check]:
        out.append(LocatedProblem(f"{where}.keys", f"must be empty: only a gpg-signed source names keys, "
                                  f"this one is {t['check']}"))
    return out
