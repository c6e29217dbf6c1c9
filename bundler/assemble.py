"""From a lock and a filled cache to the list of bundle entries (streamed from the cache) and the SBOM."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from bundler import sbom, suppliers
from bundler.cache import Cache
from bundler.lock import Lock
from bundler.spec import Spec
from contract.bundle import Entry, layout
from contract.digest import sha256_and_size
from contract.reference import parse_ref

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
# purl namespace and SBOM supplier by repository host; other repos are named by their spec name
VENDORS = {"mirror.centos.org": "centos", "vault.centos.org": "centos", "download.docker.com": "docker"}


@dataclass
class Staging:
    """A scratch directory for the few files a bundle needs that are not in the cache (metadata, repodata)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="k8s-offline-stage-")))

    def file(self, path_in_bundle: str, data: bytes, mode: int = 0o644) -> Entry:
        p = self.root / "bytes" / path_in_bundle
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return Entry(path_in_bundle, p, len(data), hashlib.sha256(data).hexdigest(), mode)

    def existing(self, path_in_bundle: str, source: Path, mode: int = 0o644) -> Entry:
        sha, size = sha256_and_size(source)
        return Entry(path_in_bundle, source, size, sha, mode)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def binary_entries(lock: Lock, cache: Cache) -> List[Entry]:
    """Release files as downloaded, gzip'd tarballs as their plain tar (see layout.stored_binary_name)."""
    out = []
    for b in lock.binaries:
        filename = upstream_filename(b.url)
        stored = layout.stored_binary_name(filename)
        if stored != filename:
            sha, size = cache.gunzipped(b.sha256)
            out.append(Entry(layout.binary_path(stored), cache.path(sha), size, sha, 0o644))
            continue
        mode = 0o755 if not filename.endswith((".tar", ".zip", ".sha256")) else 0o644
        out.append(Entry(layout.binary_path(filename), cache.path(b.sha256), b.size, b.sha256, mode))
    return out


def upstream_filename(url: str) -> str:
    return urlparse(url).path.rsplit("/", 1)[-1]


def rpm_entries(lock: Lock, cache: Cache, stage: Staging) -> List[Entry]:
    """The closure's RPMs plus createrepo_c metadata: a yum repository yum 3 on CentOS 7 reads.

    When the spec mixes repos with gpgcheck on and off, the RPMs of the latter go into a second repository
    (rpms/unchecked/, gpgcheck=0 on site) so that the main one can keep gpgcheck=1 with the pinned keys.
    """
    if not lock.rpms:
        return []
    checked_repos = {r.name for r in lock.repos if r.gpgcheck}
    checked = [r for r in lock.rpms if r.repo in checked_repos]
    if not checked or len(checked) == len(lock.rpms):  # one kind only: one repository, as the keys say
        return _repo_entries(lock.rpms, cache, stage, layout.RPMS_DIR)
    unchecked = [r for r in lock.rpms if r.repo not in checked_repos]
    return (_repo_entries(checked, cache, stage, layout.RPMS_DIR)
            + _repo_entries(unchecked, cache, stage, layout.RPMS_UNCHECKED_DIR))


def _repo_entries(rpms, cache: Cache, stage: Staging, bundle_dir: str) -> List[Entry]:
    from bundler.sources import rpm

    work = stage.root / "repos" / bundle_dir
    links = work / "in"
    links.mkdir(parents=True, exist_ok=True)
    by_name = {}
    for r in rpms:
        name = urlparse(r.url).path.rsplit("/", 1)[-1]
        by_name[name] = r
        link = links / name
        if not link.exists():
            os.symlink(cache.path(r.sha256), link)  # make_repo hardlinks the target under this name
    repo = work / "repo"
    entries = []
    for p in rpm.make_repo(sorted(links.iterdir()), repo):
        rel = p.relative_to(repo).as_posix()
        r = by_name.get(p.name) if rel.endswith(".rpm") else None
        if r is not None:
            entries.append(Entry(f"{bundle_dir}/{rel}", p, r.size, r.sha256, 0o644))
        else:
            entries.append(stage.existing(f"{bundle_dir}/{rel}", p))
    return entries


def image_entries(lock: Lock, cache: Cache) -> List[Entry]:
    """ONE OCI image layout: index.json, oci-layout and every blob once, streamed from the cache."""
    from bundler.sources import oci_layout

    if not lock.images:
        return []
    out = []
    for rel, source, size, sha in oci_layout.layout_entries(lock.images, cache):
        path = f"{layout.IMAGES_DIR}/{rel}"
        if isinstance(source, (bytes, bytearray)):
            out.append(("bytes", path, bytes(source)))
        else:
            out.append(Entry(path, Path(source), size, sha, 0o644))
    return out


def manifest_entries(spec: Spec, stage: Staging) -> List[Entry]:
    """Addon manifest templates named by the spec."""
    out = []
    for name in spec.manifests:
        src = MANIFESTS / name
        out.append(stage.existing(f"{layout.MANIFESTS_DIR}/{name}", src))
    return out


def sbom_items(spec: Spec, lock: Lock, installer_files: Sequence[Tuple[str, Path]],
               known_sha256: Optional[Dict[Path, str]] = None,
               bundled: Optional[Dict[str, str]] = None) -> List[sbom.Item]:
    """One SBOM item per binary, RPM, image and installer wheel (bundled: sha256 by path in the bundle)."""
    items = []
    spec_suppliers = {b.name: b.supplier for b in spec.binaries if b.supplier}
    image_suppliers = {i.ref: i.supplier for i in spec.images if i.supplier}
    for b in lock.binaries:
        extra = {"pin_source": b.pin_source}
        filename = upstream_filename(b.url)
        stored = layout.stored_binary_name(filename)
        if stored != filename:
            extra.update({"bundled_as": layout.binary_path(stored),
                          "bundled_sha256": (bundled or {}).get(layout.binary_path(stored), "unknown")})
        items.append(sbom.Item("binary", b.name, b.version, b.sha256, b.url,
                               sbom.binary_purl(b.name, b.version, b.url),
                               supplier=suppliers.for_url(b.url, spec_suppliers.get(b.name)), extra=extra))
    repos = {r.name: r for r in spec.rpms.repos}
    for r in lock.rpms:
        repo = repos.get(r.repo)
        vendor = VENDORS.get(urlparse(repo.baseurl).hostname or "", r.repo) if repo else r.repo
        items.append(sbom.Item(
            "rpm", r.name, f"{r.epoch}:{r.version}-{r.release}" if r.epoch else f"{r.version}-{r.release}",
            r.sha256, r.url, sbom.rpm_purl(r.name, str(r.epoch), r.version, r.release, r.arch, vendor),
            supplier=suppliers.for_rpm(vendor, repo.supplier if repo else None),
            extra={"nevra": r.nevra, "repo": r.repo,
                   "gpgcheck": str(repo.gpgcheck).lower() if repo else "unknown",
                   "signature": r.signature or "unrecorded"}))
    for img in lock.images:
        ref = parse_ref(img.ref)
        items.append(sbom.Item("image", str(ref), ref.tag or img.digest, img.digest.split(":", 1)[1], str(ref),
                               sbom.image_purl(ref.registry, ref.repository, ref.tag, img.digest),
                               supplier=suppliers.for_image(ref.registry, ref.repository, image_suppliers.get(img.ref)),
                               extra={"digest": img.digest, "platforms": ",".join(img.platforms)}))
    for rel, path in installer_files:
        if rel.endswith(".whl"):
            name, version = path.name.split("-")[:2]
            sha = (known_sha256 or {}).get(path) or sha256_and_size(path)[0]
            items.append(sbom.Item("installer", name, version, sha, f"https://pypi.org/project/{name}/{version}/",
                                   f"pkg:pypi/{name.lower().replace('_', '-')}@{version}",
                                   supplier=suppliers.for_wheel(path, name), extra={"file": path.name}))
    return items


def materialize(entries: list, stage: Staging) -> List[Entry]:
    """Turn ('bytes', path, data) placeholders into staged files; keep Entries as they are."""
    out = []
    for e in entries:
        if isinstance(e, tuple) and e and e[0] == "bytes":
            out.append(stage.file(e[1], e[2]))
        else:
            out.append(e)
    return out


def installer_entries(files: Sequence[Tuple[str, Path]], stage: Staging) -> List[Entry]:
    return [stage.existing(f"{layout.INSTALLER_DIR}/{rel}", path) for rel, path in files]


def meta_entries(spec_path: Path, lock_bytes: bytes, sbom_bytes: bytes, stage: Staging) -> List[Entry]:
    return [
        stage.existing(layout.SPEC, spec_path),
        stage.file(layout.LOCK, lock_bytes),
        stage.file(layout.SBOM, sbom_bytes),
    ]


def all_entries(spec: Spec, spec_path: Path, lock: Lock, lock_bytes: bytes, cache: Cache,
                installer_files: Sequence[Tuple[str, Path]], created: str, stage: Staging,
                extra: Optional[List[Entry]] = None, sbom_extra: Sequence[sbom.Item] = ()) -> List[Entry]:
    """Every entry of the bundle, in any order (the writer sorts)."""
    wheels = installer_entries(installer_files, stage)  # hashed once, for the manifest and the SBOM
    known = {Path(e.source_path): e.sha256 for e in wheels}
    binaries = binary_entries(lock, cache)
    doc = sbom.document(spec.name, spec.version, created,
                        sbom_items(spec, lock, installer_files, known, {e.path_in_bundle: e.sha256 for e in binaries})
                        + list(sbom_extra))
    entries = []
    entries += binaries
    entries += rpm_entries(lock, cache, stage)
    entries += materialize(image_entries(lock, cache), stage)
    entries += manifest_entries(spec, stage)
    entries += wheels
    from bundler import fetch

    entries += [Entry(layout.rpm_key_path(k.name), k.path, k.size, k.sha256, 0o644)
                for k in fetch.key_files(lock, cache)]
    entries += meta_entries(spec_path, lock_bytes, sbom.to_bytes(doc), stage)
    entries += extra or []
    return entries
