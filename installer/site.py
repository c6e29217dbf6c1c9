"""The site as apply sees it before touching a host: the verified bundle (unpacked, executables extracted),
the inventory, the PKI and every host's desired state; and the records apply keeps of it.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from contract.bundle import layout
from contract.bundle.contents import Component, TrustEntry
from contract.errors import Error
from installer import addons as addons_mod
from installer import bundle_seen, components, egress, harbor_install, local_sums, pki_material, plan_rules
from installer import pki as pki_mod
from installer import render as render_mod
from installer import versions as versions_mod
from installer.inventory import Host, Inventory
from installer.options import Out
from installer.plan_model import HostDesired, Source
from installer.state import StateDir

EXTRA_UNITS = tuple(u for c in components.COMPONENTS for u in c.observed)

# binary name -> (tarball glob in binaries/, member path suffix inside it), from the component table
BINARY_SOURCES = {b.name: (b.archive, b.member) for c in components.COMPONENTS for b in c.binaries
                  if b.member is not None}
CNI_ARCHIVE = components.CNI.binaries[0].archive


# ------------------------------------------------------------------ the bundle


@dataclass(frozen=True)
class Bundle:
    """The verified, unpacked bundle in the state directory."""

    dir: Path
    digest: str  # sha256 of the signed manifest bytes
    fingerprint: str
    name: str
    version: str
    components: Tuple[Component, ...]  # from the signed manifest (contract.bundle.contents)
    reused: bool
    files: Mapping[str, str] = field(default_factory=dict, repr=False)  # path -> sha256, from the signed manifest
    trust: Tuple[TrustEntry, ...] = ()  # how each source was checked at build time, from the signed manifest


def prepare_bundle(bundle_path: Path, pub: Path, state: StateDir, out: Out) -> Bundle:
    """Verify signature and every hash, then unpack into the state dir, or reuse the same unpacked bundle.

    A delta bundle is combined with the bundle the state directory holds unpacked (its base), every file taken
    from there checked against the delta's signed manifest."""
    from contract import bundle as fmt

    key = fmt.load_public_key(pub)
    manifest, head, _ = fmt.read_signed_head(bundle_path, key)  # signature first: cheap and decisive
    digest = hashlib.sha256(head.manifest_bytes).hexdigest()
    info = state.bundle_info()
    target = state.root / f"bundle-{digest[:16]}"
    if info and info.get("manifest_sha256") == digest and target.is_dir():
        report = bundle_seen.remembered(info, bundle_path, fmt.fingerprint(key))  # installer/bundle_seen.py
        if report is not None:
            out(f"bundle: {bundle_path} unchanged since verified in full, signature checked (reusing {target})")
        else:
            out(f"bundle: verifying {bundle_path} (same bundle as unpacked: reusing {target})")
            report = fmt.verify_bundle(bundle_path, key)  # a delta: what it carries; the rest at unpack
            seen = bundle_seen.remember(info, bundle_path, report)
            if seen != info:
                state.set_bundle_info(seen)
        reused = True
    else:
        base = _delta_base(head, manifest, info, bundle_path)
        out(f"bundle: verifying and unpacking {bundle_path}"
            + (f" (a delta: the files it does not carry come from {base.root})" if base is not None else ""))
        if target.exists():
            shutil.rmtree(target)  # a half-trusted leftover: never reused without its bundle.json
        report = fmt.unpack_bundle(bundle_path, key, target, base=base)
        for old in state.root.glob("bundle-*"):
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        state.set_bundle_info(bundle_seen.remember(
            {"manifest_sha256": digest, "fingerprint": report.fingerprint, "dir": str(target), "name": report.name,
             "version": report.version, "bundle": str(bundle_path)}, bundle_path, report))
        reused = False
    if report.not_checked:
        out(f"bundle: verified with the {report.key_type} key {report.fingerprint}; "
            f"{', '.join(report.not_checked)} not checked (no Ed25519 key given)")
    for warning in report.warnings:
        out(f"bundle: WARNING: {warning}")
    return Bundle(target, digest, report.fingerprint, report.name, report.version, tuple(manifest.components), reused,
                  {f.path: f.sha256 for f in manifest.files}, tuple(manifest.trust))


def _delta_base(head, manifest, info: Optional[dict], bundle_path: Path):
    """The base of a delta bundle: the bundle unpacked in the state directory; None for a complete bundle."""
    from contract.bundle.delta import BaseDir, Delta

    if head.delta is None:
        return None
    delta = Delta.from_bytes(head.delta, manifest)
    where = Path(info["dir"]) if info and info.get("dir") else None
    if where is None or not where.is_dir():
        raise Error(f"{bundle_path} is a delta bundle for {delta.base.describe()}, but this state directory holds no "
                    "unpacked bundle to combine it with", context="preparing the bundle",
                    hint="apply the complete bundle (or the base bundle, then this delta), or pass the state "
                    "directory of the site that has the base (--state)")
    return BaseDir(where)


def _find_archive(bundle: Bundle, pattern: str) -> Path:
    found = layout.find_binary(bundle.dir, pattern)
    if found is None:
        raise Error(f"the bundle has no {layout.stored_binary_name(pattern)} in {layout.BINARIES_DIR}/",
                    context="collecting binaries",
                    hint="build the bundle with the default spec (kubernetes-server, etcd, flannel, cni-plugins)")
    return found


def extract_binaries(bundle: Bundle, state: StateDir, names: Sequence[str]) -> Dict[str, Tuple[Path, Source]]:
    """{name: (local file, Source)} for every executable asked, extracted once per bundle into the state dir."""
    dest = state.binaries_dir(bundle.digest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted: Dict[str, Tuple[str, str]] = {}
    for n in names:
        if n in BINARY_SOURCES:
            wanted[n] = BINARY_SOURCES[n]
        else:
            wanted[n] = (CNI_ARCHIVE, n)  # a CNI plugin: ./bridge, ./flannel, ...
    out: Dict[str, Tuple[Path, Source]] = {}
    by_archive: Dict[str, List[str]] = {}
    for n, (pattern, _member) in wanted.items():
        if not (dest / n).exists():
            by_archive.setdefault(pattern, []).append(n)
    for pattern, ns in by_archive.items():
        archive = _find_archive(bundle, pattern)
        with tarfile.open(archive, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            for n in ns:
                suffix = wanted[n][1]
                m = next((mem for name, mem in members.items()
                          if name == suffix.lstrip("/") or name.endswith("/" + suffix.lstrip("/"))), None)
                if m is None:
                    raise Error(f"{archive.name} has no {suffix}", context="collecting binaries",
                                hint="the bundle's release tarball does not have the upstream layout")
                src = tar.extractfile(m)
                tmp = dest / f".{n}.tmp"
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
                tmp.chmod(0o755)
                tmp.rename(dest / n)
    sums = local_sums.Sums(dest)  # an unchanged file is not hashed again on every run (installer/local_sums.py)
    for n, (pattern, member) in wanted.items():
        p = dest / n
        out[n] = (p, Source(sums.sha256(p), f"{pattern}!{member}", 0o755))
    sums.save()
    return out


def repo_files(bundle: Bundle) -> Dict[str, Tuple[Path, Source]]:
    """{remote path under REPO_DIR: (local file, Source)} of the bundle's yum repository, sha256 from the manifest."""
    out = {}
    prefix = layout.RPMS_DIR + "/"
    for path, sha in sorted(bundle.files.items()):
        if path.startswith(prefix):
            out[f"{plan_rules.REPO_DIR}/{path[len(prefix):]}"] = (bundle.dir / path, Source(sha, path, 0o644))
    return out


RPM_GPG_DIR = "/etc/pki/rpm-gpg"


def rpm_keys(bundle: Bundle) -> Dict[str, render_mod.File]:
    """{/etc/pki/rpm-gpg/<key>: File} for every repo signing key the bundle ships (verified with the bundle)."""
    prefix = layout.RPM_KEYS_DIR + "/"
    return {f"{RPM_GPG_DIR}/{path[len(prefix):]}": render_mod.File((bundle.dir / path).read_bytes(), 0o644)
            for path in sorted(bundle.files) if path.startswith(prefix)}


def image_roles(bundle: Bundle, inv: Inventory) -> Tuple[Dict[str, str], str]:
    """({role: reference in the site registry}, naming rule) from the bundle's spec and image layout."""
    return egress.image_roles(bundle.dir, inv)  # one implementation: `installer check` renders the same images


def versions_of(bundle: Bundle) -> Dict[str, str]:
    return versions_mod.component_versions(bundle.components)


# ------------------------------------------------------------------ desired state


@dataclass
class Site:
    """Everything derived from bundle + inventory + PKI that planning and executing need."""

    inv: Inventory
    state: StateDir
    bundle: Bundle
    pki: pki_mod.Pki
    desired: Dict[str, HostDesired]
    local: Dict[str, Path]  # origin of a binary/repo Source -> local file
    images: Dict[str, str]
    naming: str
    pki_report: Optional[pki_mod.IssueReport] = None
    registry_host: Optional[Host] = None  # install mode: the Harbor host (its desired state is in `desired`)
    registry_access: Dict[str, object] = field(default_factory=dict)  # install mode: password and CA for clients


def desired_state(inv: Inventory, bundle: Bundle, state: StateDir, pki: pki_mod.Pki) -> Site:
    """Render every host's files, add binaries, repo, packages and units; addons go to the first master."""
    images, naming = image_roles(bundle, inv)
    versions = versions_of(bundle)
    material = {h.name: pki_material.material_for(pki, inv, h) for h in inv.hosts}
    keys = rpm_keys(bundle)
    rendered = render_mod.render_all(inv, pki_files=material, images=images, versions=versions,
                                     gpgcheck=bool(keys), gpgkey=[f"file://{p}" for p in sorted(keys)],
                                     unchecked_repo=layout.has_unchecked_repo(bundle.files))
    names = sorted({p.rsplit("/", 1)[-1] for h in inv.hosts for p in render_mod.binaries_for(h)})
    bins = extract_binaries(bundle, state, names)
    repo = repo_files(bundle)
    local = {src.origin: path for path, src in bins.values()}
    local.update({src.origin: path for path, src in repo.values()})
    addon_files = addons_mod.files(bundle.dir / layout.MANIFESTS_DIR, inv, images)
    desired = {}
    reg_host = harbor_install.registry_host(inv)
    if reg_host is not None:
        d, reg_local = harbor_install.desired(inv, bundle.dir, bundle.files, pki, state.root, keys,
                                              {p: s for p, (_l, s) in repo.items()}, versions)
        desired[reg_host.name] = d
        local.update(reg_local)
    for h in inv.hosts:
        files = dict(rendered[h.name])
        if inv.masters and h.name == inv.masters[0].name:
            files.update(addon_files)
        pkgs = plan_rules.wanted_packages(h)
        if pkgs:
            files.update(keys)  # yum checks every package against the bundle's pinned keys (gpgcheck=1)
        desired[h.name] = HostDesired(
            files=files,
            binaries={p: bins[p.rsplit("/", 1)[-1]][1] for p in render_mod.binaries_for(h)},
            repo={p: s for p, (_l, s) in repo.items()} if pkgs else {},
            packages=pkgs,
            units=plan_rules.wanted_units(h),
        )
    return Site(inv, state, bundle, pki, desired, local, images, naming, registry_host=reg_host,
                registry_access=harbor_install.access(inv, state.root, pki.crt_path("ca")))


def load_site(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, out: Out,
              renew: bool = False, on_inventory: Optional[Callable[[Inventory], None]] = None) -> Site:
    """Inventory, verified bundle, PKI and desired state (nothing on hosts yet). on_inventory(inv) is called as
    soon as the inventory is read (apply starts its ssh connections there, while the rest is prepared)."""
    from installer import inventory as inventory_mod

    inv = inventory_mod.load(Path(inventory))
    if on_inventory is not None:
        on_inventory(inv)
    state = StateDir(state_dir).ensure()
    bundle = prepare_bundle(Path(bundle_path), Path(pub), state, out)
    p = pki_mod.Pki(state.root)
    report = p.ensure(inv)
    site = desired_state(inv, bundle, state, p)
    site.pki_report = report
    return site


def record_hosts(site: Site) -> None:
    """Add the inventory's hosts to the record remove-node reads (only remove-node takes one out again)."""
    recorded = site.state.hosts()
    hosts = dict(recorded, **{h.name: h.model_dump(mode="json", exclude_none=True) for h in site.inv.hosts})
    if hosts != recorded:  # a converged re-apply writes nothing
        site.state.set_hosts(hosts)


def record_etcd_members(site: Site) -> None:
    """Record the inventory's etcd members as those the cluster was formed with, unless already recorded."""
    if site.inv.etcd_members and site.state.etcd_members() is None:
        site.state.set_etcd_members({m.name: m.address for m in site.inv.etcd_members})
