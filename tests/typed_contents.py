"""Typed manifest contents for test bundles: components by '<kind>/<name>': version, each made of one path."""

from __future__ import annotations

from typing import Mapping

from contract.bundle.contents import Check, Component, ComponentKind, SourceKind, TrustEntry


def components(versions: Mapping[str, str], path: str = "binaries/kubelet") -> tuple[Component, ...]:
    """One Component per '<kind>/<name>': version, each made of `path` (a member of the test bundle)."""
    out = []
    for key, version in versions.items():
        kind, _, name = key.partition("/")
        out.append(Component(ComponentKind(kind), name, version, (path,)))
    return tuple(out)


def trust(comps: tuple[Component, ...], check: Check = Check.SPEC_PIN) -> tuple[TrustEntry, ...]:
    """A trust entry (`check`) for each component, as format 2 requires."""
    return tuple(TrustEntry(SourceKind(c.kind.value), c.name, check, (), "test pin") for c in comps)


def typed(versions: Mapping[str, str], path: str = "binaries/kubelet") -> dict:
    """write_bundle keyword arguments: components and their trust."""
    comps = components(versions, path)
    return {"components": comps, "trust": trust(comps)}
