"""The manifest's typed contents (contract.bundle.contents) from the lock and the bundle's entries: every
component with the bundle paths that make it, how each source was checked, and the spec's options.

The check is what the lock recorded (a binary's pin_source, an RPM's signature, a repo's gpgcheck and repomd
status, an image's source); the detail is for people and says the same in words, with the pin.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple
from urllib.parse import urlparse

from bundler import static, wheels
from bundler.lock import UNCHECKED, Lock, LockedRepo, LockedRpm
from bundler.spec import Spec
from contract.bundle import Entry, layout
from contract.bundle.contents import LEVEL, Check, Component, Contents, Level, SourceKind, TrustEntry
from contract.bundle.contents import ComponentKind as K
from contract.errors import Error
from contract.version import __version__

_PIN = {"spec": Check.SPEC_PIN, "upstream": Check.UPSTREAM_DIGEST, "first-seen": Check.FIRST_SEEN}
_REPOMD = {"signed": Check.GPG_SIGNED, "unsigned": Check.UNSIGNED, "unchecked": Check.UNCHECKED}
_SEVERITY = {Level.OK: 0, Level.NOTE: 1, Level.WARNING: 2}
_BUG = "the bundle's entries do not match its lock: this is a bug in the bundler"


def contents(spec: Spec, lock: Lock, entries: Sequence[Entry]) -> Contents:
    """Components, trust and options of a bundle of these entries built from this (selected) lock."""
    paths = {e.path_in_bundle for e in entries}
    comps: List[Component] = []
    trust: List[TrustEntry] = []
    digest_urls = {b.name: b.digest_url for b in spec.binaries}
    for b in lock.binaries:
        path = layout.binary_path(layout.stored_binary_name(_filename(b.url)))
        comps.append(Component(K.BINARY, b.name, b.version, (_present(path, paths, b.name),)))
        detail = {"spec": f"sha256 {b.sha256} of {b.url}, pinned in the spec",
                  "upstream": f"sha256 {b.sha256} of {b.url}, as upstream publishes it ({digest_urls.get(b.name)})",
                  "first-seen": f"sha256 {b.sha256} of {b.url}, recorded at its first download (upstream "
                                "publishes no digest)"}[b.pin_source]
        trust.append(TrustEntry(SourceKind.BINARY, b.name, _PIN[b.pin_source], (), detail))
    comps += _rpm_components(lock.rpms, paths)
    trust += _dedupe([_rpm_trust(r) for r in lock.rpms])
    for img in lock.images:
        blobs = sorted({_present(layout.image_blob(blob.digest), paths, img.ref) for blob in img.blobs})
        comps.append(Component(K.IMAGE, img.ref, img.digest, tuple(blobs)))
        if img.source == "docker":
            trust.append(TrustEntry(SourceKind.IMAGE, img.ref, Check.FIRST_SEEN, (),
                                    f"exported from the local docker daemon; pinned by its digest {img.digest} then"))
        else:
            trust.append(TrustEntry(SourceKind.IMAGE, img.ref, Check.REGISTRY_DIGEST, (),
                                    f"{img.digest}, the digest the registry served at lock time; every blob "
                                    "checked against it"))
    for repo in lock.repos:
        trust += _repo_trust(repo)
    wheel_comps, wheel_trust = _wheels(sorted(paths))
    comps += wheel_comps
    trust += wheel_trust
    if static.BUNDLE_PATH in paths:
        comps.append(Component(K.EXECUTABLE, static.EXECUTABLE, __version__, (static.BUNDLE_PATH,)))
        trust.append(TrustEntry(SourceKind.EXECUTABLE, static.EXECUTABLE, Check.BUILT, (),
                                f"built from this project's sources (k8s-offline {__version__}) by the bundler"))
    return Contents(tuple(comps), tuple(trust), {k: str(v) for k, v in spec.options.model_dump().items()}).sorted()


def _filename(url: str) -> str:
    return urlparse(url).path.rsplit("/", 1)[-1]


def _present(path: str, paths: set, what: str) -> str:
    if path not in paths:
        raise Error(f"{what}: {path} is not among the bundle's entries", context="listing the bundle's components",
                    hint=_BUG)
    return path


def _rpm_components(rpms: Sequence[LockedRpm], paths: set) -> List[Component]:
    """One component per name and version (the arches of a multilib package are one, with a path each)."""
    where = {p.rsplit("/", 1)[-1]: p for p in paths
             if p.endswith(".rpm") and p.startswith((layout.RPMS_DIR + "/", layout.RPMS_UNCHECKED_DIR + "/"))}
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for r in rpms:
        name = _filename(r.url)
        if name not in where:
            raise Error(f"RPM {r.nevra}: {name} is not in the bundle's repositories",
                        context="listing the bundle's components", hint=_BUG)
        grouped.setdefault((r.name, f"{r.version}-{r.release}"), []).append(where[name])
    return [Component(K.RPM, name, version, tuple(sorted(set(ps)))) for (name, version), ps in grouped.items()]


def _rpm_trust(r: LockedRpm) -> TrustEntry:
    if r.signature == UNCHECKED:
        return TrustEntry(SourceKind.RPM, r.name, Check.UNCHECKED, (),
                          f"repo {r.repo} has gpgcheck: false in the spec; installed with gpgcheck=0")
    if r.signature:
        return TrustEntry(SourceKind.RPM, r.name, Check.GPG_SIGNED, (r.signature,),
                          f"{r.nevra}: its signature verified with the pinned key of repo {r.repo}")
    return TrustEntry(SourceKind.RPM, r.name, Check.UNRECORDED, (),
                      f"{r.nevra}: the lock was made before RPM signatures were recorded; re-lock")


def _dedupe(entries: List[TrustEntry]) -> List[TrustEntry]:
    """One entry per source: of several (the arches of one package), the one most worth a warning."""
    out: Dict[Tuple[str, str], TrustEntry] = {}
    for t in entries:
        known = out.get((t.kind.value, t.name))
        if known is None or _SEVERITY[LEVEL.get(t.check, Level.OK)] > _SEVERITY[LEVEL.get(known.check, Level.OK)]:
            out[(t.kind.value, t.name)] = t
    return list(out.values())


def _repo_trust(repo: LockedRepo) -> List[TrustEntry]:
    if not repo.gpgcheck:
        off = f"{repo.baseurl}: gpgcheck: false in the spec"
        return [TrustEntry(SourceKind.RPM_REPO, repo.name, Check.UNCHECKED, (), off),
                TrustEntry(SourceKind.RPM_REPODATA, repo.name, Check.UNCHECKED, (), off)]
    keys = tuple(repo.fingerprints)
    repomd = _REPOMD[repo.metadata]
    detail = {"signed": "repodata/repomd.xml.asc verified with the repo's pinned key(s)",
              "unsigned": "the repo publishes no repodata/repomd.xml.asc (each package is signature-checked)",
              "unchecked": "repodata/repomd.xml.asc was not checked"}[repo.metadata]
    return [TrustEntry(SourceKind.RPM_REPO, repo.name, Check.GPG_SIGNED, keys,
                       f"{repo.baseurl}: every package's signature checked against the key(s) of {repo.gpgkey} "
                       f"(sha256 {repo.key_sha256}); yum checks them again on every host"),
            TrustEntry(SourceKind.RPM_REPODATA, repo.name, repomd, keys if repomd is Check.GPG_SIGNED else (),
                       detail)]


def _wheels(paths: Sequence[str]) -> Tuple[List[Component], List[TrustEntry]]:
    """The installer's wheels: its own (built here) and its dependencies' (downloaded by pip, hash-pinned)."""
    prefix = layout.installer_path("wheels") + "/"
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for p in paths:
        if p.startswith(prefix) and p.endswith(".whl"):
            grouped.setdefault(wheels.name_version(p[len(prefix):]), []).append(p)
    comps = [Component(K.WHEEL, name, version, tuple(ps)) for (name, version), ps in grouped.items()]
    trust = []
    for name in sorted({name for name, _ in grouped}):
        if name == wheels.PROJECT:
            trust.append(TrustEntry(SourceKind.WHEEL, name, Check.BUILT, (),
                                    f"built from this project's sources (k8s-offline {__version__})"))
        else:
            trust.append(TrustEntry(SourceKind.WHEEL, name, Check.FIRST_SEEN, (),
                                    "downloaded by pip from its package index; its sha256 pinned in "
                                    "installer/requirements-cp*.txt when first downloaded"))
    return comps, trust
