"""The connected-side pipeline: spec -> lock -> fetch into the cache -> assemble -> sign and write."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import requests

from bundler import assemble, epoch, fetch, since, static, wheels
from bundler import contents as bundle_contents
from bundler import lock as lock_mod
from bundler import spec as spec_mod
from bundler.cache import Cache
from bundler.sources import TqdmProgress
from contract import bundle as fmt
from contract.bundle import signature
from contract.bundle.manifest import now_created
from contract.errors import Error
from contract.version import __version__


@dataclass
class BuildSummary:
    """What a build did, for people and for --json."""

    bundle: Path
    parts: Sequence[Path]
    name: str
    version: str
    files: int
    bytes: int
    compressed_bytes: int
    downloaded_bytes: int
    cache_hits: int
    artifacts: dict
    lock_path: Path
    lock_written: bool
    fingerprint: str
    bootstrap: Optional[Path] = None  # bootstrap.tar: verify + static installer without zstd
    fingerprint_p256: Optional[str] = None  # the P-256 key of manifest.sig.p256; None: Ed25519 signature only
    p256_key: Optional[Path] = None  # where that key came from
    delta: Optional[dict] = None  # a delta (--since): its base and what it carries / takes from the base

    @property
    def signatures(self) -> list[str]:
        """The signature members the bundle carries."""
        return [fmt.layout.SIGNATURE] + ([fmt.layout.SIGNATURE_P256] if self.fingerprint_p256 else [])

    def as_dict(self) -> dict:
        return {
            "bundle": str(self.bundle), "parts": [str(p) for p in self.parts], "name": self.name,
            "version": self.version, "files": self.files, "bytes": self.bytes,
            "compressed_bytes": self.compressed_bytes, "downloaded_bytes": self.downloaded_bytes,
            "cache_hits": self.cache_hits, "artifacts": self.artifacts, "lock": str(self.lock_path),
            "lock_written": self.lock_written, "fingerprint": self.fingerprint,
            "bootstrap": str(self.bootstrap) if self.bootstrap else None,
            "fingerprint_p256": self.fingerprint_p256, "p256_key": str(self.p256_key) if self.p256_key else None,
            "signatures": self.signatures, "delta": self.delta,
        }


@dataclass(frozen=True)
class SigningKeys:
    """The keys a bundle is signed with: always Ed25519, and P-256 when there is a P-256 key."""

    key: signature.Ed25519PrivateKey
    p256_key: Optional[signature.P256PrivateKey] = None
    p256_path: Optional[Path] = None


def load_signing_keys(key_path: Path, p256_key_path: Optional[Path] = None) -> SigningKeys:
    """The Ed25519 key, and the P-256 key from p256_key_path or else from bundle-p256.key beside the Ed25519
    key when that file exists (key directories from before the P-256 key have none: Ed25519 only)."""
    key = fmt.load_private_key(key_path)
    if p256_key_path is None:
        beside = Path(key_path).parent / signature.P256_PRIVATE_KEY_FILE
        if not os.path.lexists(beside):
            return SigningKeys(key)
        p256_key_path = beside
    return SigningKeys(key, fmt.load_p256_private_key(p256_key_path), Path(p256_key_path))


def _session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = "k8s-offline-bundler"
    return s


def run_lock(spec_path: Path, mirrors: Optional[Path], cache: Cache, jobs: int,
             session: Optional[requests.Session] = None, progress=None) -> Path:
    """Resolve everything the spec names and write bundle-lock.yaml beside it."""
    spec = spec_mod.load(spec_path, mirrors)
    progress = progress if progress is not None else TqdmProgress(stream=sys.stderr)
    lk = fetch.lock(spec, spec_path, session or _session(), cache, jobs=jobs, progress=progress)
    path = lock_mod.path_for(spec_path)
    return lock_mod.write(lock_mod.keep_time(lk, path), path)


def run_build(spec_path: Path, mirrors: Optional[Path], key_path: Path, out: Path, cache: Cache, *,
              jobs: int = 4, locked: bool = False, split_size: Optional[str] = None,
              pythons: Sequence[str] = wheels.DEFAULT_PYTHONS, created: Optional[str] = None,
              session: Optional[requests.Session] = None, progress=None, level: int = fmt.DEFAULT_LEVEL,
              include_static: bool = True, static_cache: Optional[Path] = None,
              p256_key_path: Optional[Path] = None, check_upstream: bool = False,
              since_path: Optional[Path] = None) -> BuildSummary:
    """Build the signed bundle; the lock beside the spec is used, and written if new or extended.

    locked: build only what the lock pins, from the cache when it is there: no request at all then (image
    tags are not asked about; drift of a tag is `bundler lock`'s business), unless check_upstream.

    Signed with the Ed25519 key and, when there is one (p256_key_path, or bundle-p256.key beside key_path),
    with the P-256 key too, so that openssl 1.0.2 (CentOS 7) can verify it.

    since_path (a site receipt or an old bundle-lock.yaml): a delta bundle, carrying only what that base lacks
    (bundler/since.py), under the same signed manifest as the complete bundle.
    """
    spec_path = Path(spec_path)
    keys = load_signing_keys(key_path, p256_key_path)  # fail before any download when a key is wrong
    fmt.check_level(level)
    epoch.source_date_epoch()  # a malformed SOURCE_DATE_EPOCH fails before any download
    if include_static and static.unavailable():
        raise Error(f"cannot build the static installer here: {static.unavailable()}",
                    context="preparing the bundle's installer executable",
                    hint="run `make static` once (it installs what it needs), or build with --no-static")
    split = fmt.parse_size(split_size) if split_size else None
    spec = spec_mod.load(spec_path, mirrors)
    session = session or _session()
    progress = progress if progress is not None else TqdmProgress(stream=sys.stderr)
    lock_path = lock_mod.path_for(spec_path)
    written = False
    if lock_path.exists():
        lk = lock_mod.load(lock_path)
        if lk.spec_sha256 != lock_mod.spec_digest(spec_path) and locked:
            raise Error(f"{spec_path} changed since {lock_path} was written",
                        context="building with --locked", hint="run `bundler lock` to re-lock, then build again")
    elif locked:
        raise Error(f"no lockfile {lock_path}", context="building with --locked",
                    hint="run `bundler lock` first (it resolves and pins every artifact)")
    else:
        lk = fetch.lock(spec, spec_path, session, cache, jobs=jobs, progress=progress)
        lock_mod.write(lk, lock_path)
        written = True
    result = fetch.fetch(spec, lk, cache, session, jobs=jobs, locked=locked, progress=progress, spec_path=spec_path,
                         check_upstream=check_upstream or not locked)
    if result.lock_changed:
        lock_mod.write(result.lock, lock_path)
        written = True
    lock_bytes = lock_mod.dump(result.lock).encode()
    lk = selected(spec, result.lock)
    # never the clock: SOURCE_DATE_EPOCH or the lock's time, so the same inputs give the same bundle bytes
    created = now_created(created) if created else epoch.bundle_time(result.lock.created)
    stage = assemble.Staging()
    try:
        installer_files = wheels.collect(cache.root, stage.root, pythons).files
        static_exe = None
        if include_static:
            where = static_cache or os.environ.get("K8S_OFFLINE_STATIC_CACHE") or cache.root
            static_exe = static.ensure_static(where, log=lambda m: print(m, file=sys.stderr))
        exe_entry = static.entry(static_exe) if static_exe else None
        entries = assemble.all_entries(
            spec, spec_path, lk, lock_bytes, cache, installer_files, created, stage,
            extra=[exe_entry] if exe_entry else None,
            sbom_extra=[static.sbom_item(static_exe, __version__, exe_entry.sha256)] if exe_entry else ())
        delta = since.load(since_path, cache, entries).delta(entries) if since_path is not None else None
        typed = bundle_contents.contents(spec, lk, entries)  # components, trust and options of the manifest
        with _bar("bundle") as bar:
            res = fmt.write_bundle(
                out, spec.name, spec.version, entries, keys.key, p256_key=keys.p256_key,
                spec_sha256=hashlib.sha256(spec_path.read_bytes()).hexdigest(),
                lock_sha256=hashlib.sha256(lock_bytes).hexdigest(),
                components=typed.components, trust=typed.trust, options=typed.options, split_size=split,
                created=created, progress=bar, level=level, delta=delta)
    finally:
        stage.cleanup()
    bootstrap = static.write_bootstrap_tar(res.path, static_exe) if static_exe else None
    return BuildSummary(
        bundle=res.path, parts=res.parts, name=res.name, version=res.version, files=len(res.manifest.files),
        bytes=res.manifest.total_size, compressed_bytes=res.size, downloaded_bytes=result.downloaded_bytes,
        cache_hits=result.cache_hits, artifacts=dict(result.artifacts), lock_path=lock_path,
        lock_written=written, fingerprint=res.fingerprint, bootstrap=bootstrap,
        fingerprint_p256=res.fingerprint_p256 or None, p256_key=keys.p256_path,
        delta=fmt.delta_summary(res.manifest, delta) if delta is not None else None)


def selected(spec: spec_mod.Spec, lk: lock_mod.Lock) -> lock_mod.Lock:
    """The part of the lock the spec's options select (a lock may pin alternatives too)."""
    names = {b.name for b in spec.selected_binaries()}
    refs = {i.ref for i in spec.selected_images()}
    return lk.model_copy(update={
        "binaries": tuple(b for b in lk.binaries if b.name in names),
        "images": tuple(i for i in lk.images if i.ref in refs),
        "rpms": lk.rpms if spec.selected_packages() else (),
    })


def _bar(desc: str):
    from contract.progress import bar

    return bar(desc)
