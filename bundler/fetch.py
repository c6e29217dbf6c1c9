"""The connected side up to the cache: resolve the spec into a lock, then fetch what the lock names."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import requests

from bundler import epoch
from bundler import lock as lockfile
from bundler.cache import Cache, hex_of
from bundler.lock import UNCHECKED, Lock, LockedBinary, LockedImage, LockedRepo, LockedRpm
from bundler.sources import Progress, ProgressLike, as_progress, http
from bundler.spec import Binary, Image, Spec
from contract.errors import DigestMismatch, Error

RELOCK = "the spec changed since the lock was made: review the change and re-lock with `bundler lock`"
RETAG_HINT = ("an upstream tag now names other content: review the new image and re-lock with `bundler lock` "
              "(or pin the reference by digest in the spec)")


@dataclass(frozen=True)
class CachedFile:
    """One artifact in the cache, for assembly to stream from."""

    kind: str  # binary | rpm | blob | key
    name: str  # binary name, RPM file name, blob digest (sha256:...), or the repo a key signs
    sha256: str
    size: int
    path: Path


@dataclass
class FetchResult:
    """What fetch did, and where every artifact is."""

    lock: Lock  # the lock used; with locked=False it may have gained entries (see lock_changed)
    lock_changed: bool = False
    downloaded_bytes: int = 0
    cache_hits: int = 0
    artifacts: Dict[str, int] = field(default_factory=dict)  # count per kind
    files: List[CachedFile] = field(default_factory=list)

    def by_kind(self, kind: str) -> List[CachedFile]:
        return [f for f in self.files if f.kind == kind]


@dataclass(frozen=True)
class Net:
    """How to talk to upstreams: the session, parallelism, retries and the (injectable) sleep."""

    session: requests.Session
    jobs: int = 4
    retries: int = 5
    backoff: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    tally: http.Stats = field(default_factory=http.Stats)  # every download made through this Net


# --- lock ----------------------------------------------------------------------------------------

def lock(spec: Spec, spec_path: Path, session: requests.Session, cache: Cache, jobs: int = 4,
         progress: ProgressLike = None, *, retries: int = 5, backoff: float = 0.5,
         sleep: Callable[[float], None] = time.sleep) -> Lock:
    """Resolve every selected artifact of the spec to sha256/size (binaries end up in the cache)."""
    net = Net(session, jobs, retries, backoff, sleep)
    sink = as_progress(progress)
    binaries = _lock_binaries(spec, spec.selected_binaries(), cache, net, sink)
    repos, rpms = _lock_rpms(spec, cache, net, sink)
    return Lock(
        spec_sha256=lockfile.spec_digest(spec_path),
        created=epoch.lock_time(),
        name=spec.name,
        version=spec.version,
        options=spec.options.model_dump(mode="json"),
        binaries=tuple(binaries),
        repos=tuple(repos),
        rpms=tuple(rpms),
        images=tuple(_lock_image(spec, img, net) for img in spec.selected_images()),
    ).sorted()


def _lock_binaries(spec: Spec, binaries: Sequence[Binary], cache: Cache, net: Net,
                   sink: Progress) -> List[LockedBinary]:
    """Pin each binary: the spec's sha256, else upstream's published digest, else what we first see."""
    pins: List[Tuple[Optional[str], str]] = []
    for b in binaries:
        if b.sha256:
            pins.append((b.sha256, "spec"))
        elif b.digest_url:
            pins.append((http.fetch_upstream_digest(b, spec.mirrors, net.session, retries=net.retries,
                                                    backoff=net.backoff, sleep=net.sleep), "upstream"))
        else:
            pins.append((None, "first-seen"))
    items = [http.item(b.url, spec.mirrors, sha, name=b.name) for b, (sha, _) in zip(binaries, pins)]
    stats = _download(items, cache, net, sink, "binaries")
    return [LockedBinary(name=b.name, version=b.version, url=b.url, sha256=r.sha256, size=r.size,
                         pin_source=src)
            for b, (_, src), r in zip(binaries, pins, stats.results)]


def _lock_rpms(spec: Spec, cache: Cache, net: Net, sink: Progress, previous: Optional[Lock] = None
               ) -> Tuple[List[LockedRepo], List[LockedRpm]]:
    """The repos' checked keys and the RPM closure, every RPM downloaded and its signature verified."""
    if not spec.selected_packages():
        return [], []
    from bundler.sources import gpg, rpm

    trust = gpg.trust_for(spec.rpms.repos, _key_fetcher(spec, cache, net, sink))
    metadata: Dict[str, str] = {}

    def check_repomd(repo: Any, repomd: bytes, asc: Optional[bytes]) -> None:
        metadata[repo.name] = gpg.repomd_status(trust[repo.name], repomd, asc)
        before = previous.repo(repo.name) if previous is not None else None
        if before is not None and before.metadata == "signed" and metadata[repo.name] == "unsigned":
            raise Error(f"repo {repo.name!r} no longer publishes repodata/repomd.xml.asc; it did when locked",
                        context=f"reading repository {repo.name!r}",
                        hint="a mirror that drops the metadata signature is suspect: use another mirror")

    artifacts = rpm.resolve(spec, net.session, check_repomd=check_repomd)
    # every RPM is downloaded now: the lock records whose signature it carries
    items = [http.item(a.url, spec.mirrors, a.sha256, a.size or None, name=a.filename) for a in artifacts]
    stats = _download(items, cache, net, sink, "rpms")
    pairs = list(zip(artifacts, stats.results))
    artifacts = [dataclasses.replace(a, sha256=r.sha256, size=r.size) for a, r in pairs]
    signatures = _verify_signatures(trust, [(a.repo, a.filename, r.path) for a, r in pairs])
    repos = [LockedRepo(name=r.name, baseurl=r.baseurl, gpgcheck=r.gpgcheck,
                        gpgkey=r.gpgkey if r.gpgcheck else None, key_sha256=trust[r.name].key_sha256,
                        key_size=trust[r.name].key_size, fingerprints=trust[r.name].fingerprints,
                        metadata=metadata.get(r.name, "unchecked"))
             for r in spec.rpms.repos]
    rpms = [LockedRpm.model_validate({**a.to_dict(), "signature": signatures[(a.repo, a.filename)]})
            for a in artifacts]
    return repos, rpms


def _key_fetcher(spec: Spec, cache: Cache, net: Net, sink: Progress):
    """gpg.trust_for's downloader: a key URL (through mirrors) into the cache, pinned once locked."""

    def fetch_key(url: str, sha256: Optional[str], size: Optional[int]) -> Tuple[Path, str, int]:
        try:
            stats = _download([http.item(url, spec.mirrors, sha256, size, name=url.rsplit("/", 1)[-1])],
                              cache, net, sink, "signing keys")
        except Error as e:
            if sha256 is None or not isinstance(e, DigestMismatch):
                raise
            raise Error(f"the signing key at {url} changed since the lock was made", context=e.context,
                        details=e.details,
                        hint="a vendor key rarely changes: check the vendor's announcement, "
                             "then re-lock with `bundler lock`") from None
        r = stats.results[0]
        return r.path, r.sha256, r.size

    return fetch_key


def _verify_signatures(trust: Dict[str, Any], files: Sequence[Tuple[str, str, Path]]
                       ) -> Dict[Tuple[str, str], str]:
    """(repo, RPM file name) -> the signer's fingerprint, or UNCHECKED for repos with gpgcheck off."""
    from bundler.sources import gpg

    by_repo: Dict[str, List[Tuple[str, Path]]] = {}
    for repo, name, path in files:
        by_repo.setdefault(repo, []).append((name, path))
    out: Dict[Tuple[str, str], str] = {}
    for repo, named in sorted(by_repo.items()):
        t = trust[repo]
        if t.gpgcheck:
            signed = gpg.verify_rpms(named, t.keys, repo)
        else:
            signed = {name: UNCHECKED for name, _ in named}
        out.update(((repo, name), fpr) for name, fpr in signed.items())
    return out


def _lock_image(spec: Spec, image: Image, net: Net) -> LockedImage:
    from bundler.sources import images

    artifact = images.resolve(image, spec.mirrors, net.session)
    data = artifact.to_dict()
    data["ref"] = image.ref  # the lock is keyed by the spec's own spelling of the reference
    return LockedImage.model_validate({k: data[k] for k in LockedImage.model_fields if k in data})


def _download(items: List[http.Item], cache: Cache, net: Net, sink: Progress, label: str) -> http.Stats:
    stats = http.download(items, cache, net.session, jobs=net.jobs, retries=net.retries, backoff=net.backoff,
                          progress=sink, sleep=net.sleep, label=label)
    net.tally.merge(stats)
    return stats


# --- drift ---------------------------------------------------------------------------------------

@dataclass
class Drift:
    """How spec and lock disagree: entries the lock lacks, and entries that changed."""

    missing_binaries: List[Binary] = field(default_factory=list)
    missing_packages: List[str] = field(default_factory=list)
    missing_images: List[Image] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)

    @property
    def missing(self) -> List[str]:
        return ([f"binary {b.name} {b.version}" for b in self.missing_binaries]
                + [f"rpm {p}" for p in self.missing_packages]
                + [f"image {i.ref}" for i in self.missing_images])


def drift(spec: Spec, lk: Lock) -> Drift:
    """Compare the spec's selected artifacts with the lock (pure)."""
    from bundler.sources.rpm import pin_matches

    d = Drift()
    for b in spec.selected_binaries():
        lb = lk.binary(b.name)
        if lb is None:
            d.missing_binaries.append(b)
            continue
        if lb.url != b.url:
            d.changed.append(f"binary {b.name}: the spec's url is {b.url}, the lock's is {lb.url}")
        if lb.version != b.version:
            d.changed.append(f"binary {b.name}: the spec says version {b.version}, the lock {lb.version}")
        if b.sha256 and b.sha256 != lb.sha256:
            d.changed.append(f"binary {b.name}: the spec pins sha256 {b.sha256}, the lock {lb.sha256}")
    locked_rpms: Dict[str, List[LockedRpm]] = {}
    for r in lk.rpms:
        locked_rpms.setdefault(r.name, []).append(r)
    for p in spec.selected_packages():
        have = locked_rpms.get(p.name)
        if not have:
            d.missing_packages.append(p.name)
        elif p.version and not any(pin_matches(p.version, _evr(r)) for r in have):
            d.changed.append(f"rpm {p.name}: the spec pins {p.version}, the lock has "
                             + ", ".join(_evr(r) for r in have))
    repos = {r.name: r.baseurl.rstrip("/") + "/" for r in spec.rpms.repos}
    for r in lk.rpms:
        base = repos.get(r.repo)
        if base is None:
            d.changed.append(f"rpm {r.nevra}: its repo {r.repo!r} is no longer in the spec")
        elif not r.url.startswith(base):
            d.changed.append(f"rpm {r.nevra}: {r.url} is not under repo {r.repo!r}'s baseurl {base}")
    if spec.selected_packages() and lk.repos:  # a lock without repos predates signature checks: see fetch
        d.changed += _trust_drift(spec, lk)
    for img in spec.selected_images():
        li = lk.image(img.ref)
        if li is None:
            d.missing_images.append(img)
            continue
        if tuple(sorted(li.platforms)) != tuple(sorted(img.platforms)):
            d.changed.append(f"image {img.ref}: the spec wants platforms {', '.join(img.platforms)}, "
                             f"the lock has {', '.join(li.platforms)}")
        pinned = img.parsed.digest
        if pinned and pinned != li.digest:
            d.changed.append(f"image {img.ref}: the reference pins {pinned}, the lock has {li.digest}")
    return d


def _trust_drift(spec: Spec, lk: Lock) -> List[str]:
    """How the spec's gpgcheck, key URLs and pinned fingerprints differ from what the lock checked."""
    out: List[str] = []
    unrecorded = [r.nevra for r in lk.rpms if r.signature is None]
    if unrecorded:
        out.append(f"{len(unrecorded)} RPM(s) have no signature recorded, e.g. {unrecorded[0]}")
    specs = {r.name: r for r in spec.rpms.repos}
    for name in sorted({r.repo for r in lk.rpms} & set(specs)):
        s, locked = specs[name], lk.repo(name)
        if locked is None:
            out.append(f"repo {name}: the lock records no signing key for it")
            continue
        if s.gpgcheck != locked.gpgcheck:
            out.append(f"repo {name}: the spec says gpgcheck {str(s.gpgcheck).lower()}, "
                       f"the lock {str(locked.gpgcheck).lower()}")
        elif s.gpgcheck and s.gpgkey != locked.gpgkey:
            out.append(f"repo {name}: the spec's gpgkey is {s.gpgkey}, the lock's is {locked.gpgkey}")
        elif s.gpgcheck and set(s.fingerprints) != set(locked.fingerprints):
            out.append(f"repo {name}: the spec pins fingerprint {', '.join(s.fingerprints)}, "
                       f"the lock {', '.join(locked.fingerprints)}")
    return out


def _evr(r: LockedRpm) -> str:
    return (f"{r.epoch}:" if r.epoch else "") + f"{r.version}-{r.release}"


def _complete(spec: Spec, lk: Lock, d: Drift, cache: Cache, net: Net, sink: Progress,
              spec_path: Optional[Path]) -> Lock:
    """The lock plus entries for what the spec added (everything else locked stays as it was)."""
    binaries = list(lk.binaries) + _lock_binaries(spec, d.missing_binaries, cache, net, sink)
    rpms, repos = list(lk.rpms), list(lk.repos)
    if d.missing_packages:
        have = {r.name for r in rpms}
        repos, fresh = _lock_rpms(spec, cache, net, sink, previous=lk)
        rpms += [r for r in fresh if r.name not in have]
    images = list(lk.images) + [_lock_image(spec, img, net) for img in d.missing_images]
    selected = {b.name for b in spec.selected_binaries()}
    refs = {i.ref for i in spec.selected_images()}
    update: Dict[str, Any] = {
        "binaries": tuple(b for b in binaries if b.name in selected),
        "rpms": tuple(rpms),
        "repos": tuple(repos),
        "images": tuple(i for i in images if i.ref in refs),
        "options": spec.options.model_dump(mode="json"),
        "created": epoch.lock_time(),  # what it pins changed: a new lock, a new time
    }
    if spec_path is not None:
        update["spec_sha256"] = lockfile.spec_digest(spec_path)
    return lk.model_copy(update=update).sorted()


# --- fetch ---------------------------------------------------------------------------------------

def fetch(spec: Spec, lk: Lock, cache: Cache, session: requests.Session, jobs: int = 4, locked: bool = False,
          progress: ProgressLike = None, *, spec_path: Optional[Path] = None, retries: int = 5,
          backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
          check_upstream: bool = True) -> FetchResult:
    """Bring every artifact the lock names into the cache, verified; refuse any drift from the spec.

    check_upstream: also ask each registry whether an image tag still names the locked digest (one manifest
    request per tag). Without it, and with everything in the cache, nothing at all goes over the network:
    what the lock pins is verified by hash (and RPMs by signature) from the cache alone.
    """
    net = Net(session, jobs, retries, backoff, sleep)
    sink = as_progress(progress)
    d = drift(spec, lk)
    if d.changed:
        raise Error(f"the lock no longer matches the spec ({len(d.changed)} change"
                    f"{'s' if len(d.changed) > 1 else ''})",
                    context="checking bundle-lock.yaml against the spec",
                    details=d.changed, hint=RELOCK)
    changed = False
    resolving = 0
    if d.missing:
        if locked:
            raise Error(f"{len(d.missing)} artifact{'s' if len(d.missing) > 1 else ''} of the spec "
                        f"{'are' if len(d.missing) > 1 else 'is'} not in the lock; run `bundler lock`",
                        context="building with --locked", details=d.missing,
                        hint="--locked builds only what bundle-lock.yaml pins: "
                             "re-lock, or build without --locked")
        lk = _complete(spec, lk, d, cache, net, sink, spec_path)
        changed = True
        resolving = net.tally.downloaded_bytes  # completing the lock downloads first-seen binaries
    if spec.selected_packages() and lk.rpms and not lk.repos:
        raise Error("bundle-lock.yaml predates RPM signature checks: it records no signing keys",
                    context="checking bundle-lock.yaml against the spec",
                    hint="re-lock with `bundler lock`: it checks every RPM against the keys the spec pins "
                         "and records who signed it")
    # only what the spec still selects (an option may have switched something off)
    selected = {b.name for b in spec.selected_binaries()}
    refs = {i.ref for i in spec.selected_images()}
    binaries = [b for b in lk.binaries if b.name in selected]
    images = [i for i in lk.images if i.ref in refs]

    result = FetchResult(lock=lk, lock_changed=changed, downloaded_bytes=resolving)
    stats = _download([http.item(b.url, spec.mirrors, b.sha256, b.size, b.name) for b in binaries],
                      cache, net, sink, "binaries")
    result.downloaded_bytes += stats.downloaded_bytes
    result.cache_hits += stats.cache_hits
    result.files += [CachedFile("binary", b.name, r.sha256, r.size, r.path)
                     for b, r in zip(binaries, stats.results)]

    _fetch_rpms(spec, lk, lk.rpms if spec.selected_packages() else (), cache, net, sink, result)
    _fetch_images(spec, images, cache, net, sink, result, check_upstream)

    result.artifacts = {"binary": len(binaries), "rpm": len(result.by_kind("rpm")), "image": len(images),
                        "blob": len(result.by_kind("blob")), "key": len(result.by_kind("key"))}
    return result


def _fetch_rpms(spec: Spec, lk: Lock, rpms: Sequence[LockedRpm], cache: Cache, net: Net, sink: Progress,
                result: FetchResult) -> None:
    """Bring the locked keys and RPMs into the cache and check every RPM's signature again."""
    if not rpms:
        return
    from bundler.sources import gpg

    used = {r.repo for r in rpms}
    pins = {r.name: (r.key_sha256, r.key_size) for r in lk.repos if r.key_sha256}
    repos = [r for r in spec.rpms.repos if r.name in used]
    trust = gpg.trust_for(repos, _key_fetcher(spec, cache, net, sink), pins)
    missing = [r for r in rpms if not cache.has(r.sha256, r.size)]
    result.cache_hits += len(rpms) - len(missing)
    if missing:
        from bundler.sources import rpm

        artifacts = [rpm.RpmArtifact.from_dict(r.model_dump()) for r in missing]
        stats = rpm.fetch(artifacts, cache, net.session, net.jobs, progress=sink, mirrors=spec.mirrors)
        result.downloaded_bytes += int(_stat(stats, "downloaded_bytes"))
    files = []
    for r in rpms:
        filename = f"{r.name}-{r.version}-{r.release}.{r.arch}.rpm"
        path = _cached(cache, r.sha256, r.size, r.url)
        files.append((r.repo, filename, path))
        result.files.append(CachedFile("rpm", filename, r.sha256, r.size, path))
    # the cache is trusted by hash only; the signature check is what ties each file to its vendor
    signatures = _verify_signatures(trust, files)
    moved = [f"{r.nevra}: signed by {signatures[(r.repo, name)]}, the lock recorded {r.signature}"
             for r, (_, name, _) in zip(rpms, files) if signatures[(r.repo, name)] != r.signature]
    if moved:
        raise Error(f"{len(moved)} RPM(s) verify with another key than the lock recorded",
                    context="checking RPM signatures", details=moved, hint=RELOCK)
    result.files += key_files(lk, cache, used)


def key_files(lk: Lock, cache: Cache, repos: Optional[Sequence[str]] = None) -> List[CachedFile]:
    """The signing key of every gpgcheck repo (of `repos`, default all): what the bundle ships for yum."""
    return [CachedFile("key", r.name, r.key_sha256, r.key_size or 0,
                       _cached(cache, r.key_sha256, r.key_size, r.gpgkey))
            for r in sorted(lk.repos, key=lambda r: r.name)
            if r.gpgcheck and r.key_sha256 and r.gpgkey and (repos is None or r.name in repos)]


def _fetch_images(spec: Spec, images: Sequence[LockedImage], cache: Cache, net: Net, sink: Progress,
                  result: FetchResult, check_upstream: bool = True) -> None:
    blobs: Dict[str, int] = {}
    todo = []
    for img in images:
        mine = {img.digest: img.size, **{b.digest: b.size for b in img.blobs}}
        blobs.update(mine)
        if all(cache.has(dg, size) for dg, size in mine.items()):
            result.cache_hits += 1
        else:
            todo.append(img)
    if check_upstream:
        _check_tags(spec, images, net)
    if todo:
        from bundler.sources import images as registry

        for img in todo:
            artifact = registry.ImageArtifact.from_dict(_image_dict(img))
            stats = registry.fetch(artifact, spec.mirrors, cache, net.session, progress=sink)
            result.downloaded_bytes += int(_stat(stats, "downloaded_bytes"))
    for digest, size in sorted(blobs.items()):
        path = _cached(cache, digest, size, digest)
        result.files.append(CachedFile("blob", digest, hex_of(digest), size, path))


def _check_tags(spec: Spec, images: Sequence[LockedImage], net: Net) -> None:
    """Refuse images whose tag upstream now names another digest than the lock (one manifest GET each)."""
    from bundler.sources import images as registry

    wanted = {i.ref: i for i in spec.selected_images()}
    moved = []
    for img in images:
        image = wanted.get(img.ref)
        if image is None or image.source != "registry" or image.parsed.digest:
            continue  # a digest reference cannot move; `docker` images have no registry to ask
        now = registry.resolve(image, spec.mirrors, net.session)
        if now.digest != img.digest:
            moved.append(f"image {img.ref}: locked {img.digest}, the registry now serves {now.digest}")
    if moved:
        raise Error(f"{len(moved)} image tag{'s' if len(moved) > 1 else ''} moved since the lock was made",
                    context="checking image tags against bundle-lock.yaml", details=moved, hint=RETAG_HINT)


def _image_dict(img: LockedImage) -> Dict[str, Any]:
    data = img.model_dump(mode="json")
    data["blobs"] = tuple((b.digest, b.size, b.media_type) for b in img.blobs)
    data["platforms"] = tuple(img.platforms)
    return data


def _stat(stats: Any, key: str) -> int:
    if isinstance(stats, dict):
        return stats.get(key, 0)
    return getattr(stats, key, 0)


def _cached(cache: Cache, sha256: str, size: int, what: str) -> Path:
    """The object's path; trusted by name plus a size check (the cache only publishes verified files)."""
    if not cache.has(sha256, size or None):
        raise Error(f"{what} is not in the cache after fetching it (sha256 {hex_of(sha256)})",
                    context="checking the download cache",
                    hint="another process may have pruned the cache meanwhile; re-run the build")
    return cache.path(sha256)
