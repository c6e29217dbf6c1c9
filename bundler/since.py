"""`bundler build --since FILE`: what the base of a delta holds, from a site receipt or an old bundle-lock.yaml.

A receipt (`installer receipt`) lists every file of the bundle the site keeps unpacked, by sha256: the delta
leaves out exactly those. An old lock names the base only by its lock digest and its artifacts: every binary
(as downloaded and, when the cache knows it, as stored: gzip'd tarballs are stored as their plain tar), RPM and
image blob it pins is taken to be in the base; what the base bundle did not select (an option's alternative)
is then missing on site, and the combination names it there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bundler import lock as lock_mod
from bundler.cache import Cache
from contract import receipt as receipt_mod
from contract.bundle import Entry
from contract.bundle.delta import Base, Delta, omitted
from contract.documents import read_yaml
from contract.errors import Error


@dataclass(frozen=True)
class SiteBase:
    """The base a delta is computed against and the sha256 of every file content it holds."""

    base: Base
    have: frozenset
    source: str  # "receipt" or "lock"

    def delta(self, entries: Sequence[Entry]) -> Delta:
        return Delta(self.base, omitted(((e.path_in_bundle, e.sha256) for e in entries), set(self.have)))


def load(path: Path, cache: Cache, entries: Sequence[Entry]) -> SiteBase:
    """The base in a receipt (the bundle of it holding most of `entries`) or an old lock."""
    path = Path(path)
    if not path.is_file():
        raise Error(f"{path} does not exist", context="reading the base of a delta (--since)",
                    hint="pass a receipt written by `installer receipt` on the site, or the bundle-lock.yaml "
                    "of the bundle the site has")
    data, _ = read_yaml(path, "base of a delta (--since)")  # JSON is YAML: receipts are JSON
    if receipt_mod.is_receipt(data):
        return _from_receipt(receipt_mod.Receipt.from_dict(data, str(path)), path, entries)
    if isinstance(data, dict) and "lock_version" in data:
        return _from_lock(lock_mod.load(path), cache)
    raise Error(f"{path} is neither a site receipt nor a bundle-lock.yaml", context="reading the base of a delta "
                "(--since)", hint="pass the file `installer receipt -o FILE` wrote on the site, or an old "
                "bundle-lock.yaml")


def _from_receipt(r: receipt_mod.Receipt, path: Path, entries: Sequence[Entry]) -> SiteBase:
    chosen = receipt_mod.best_base(r, {e.sha256: e.size for e in entries})
    if chosen is None:
        raise Error(f"the receipt {path} lists no unpacked bundle: the site has no base for a delta",
                    context="reading the base of a delta (--since)",
                    hint="build the complete bundle (without --since) for this site")
    return SiteBase(Base(chosen.name, chosen.version, chosen.manifest_sha256, chosen.lock_sha256),
                    frozenset(f.sha256 for f in chosen.files), "receipt")


def _from_lock(lk: lock_mod.Lock, cache: Cache) -> SiteBase:
    have = set(lk.digests())
    for b in lk.binaries:
        if cache.has(b.sha256, b.size) and b.url.endswith((".tar.gz", ".tgz")):
            have.add(cache.gunzipped(b.sha256)[0])
    digest = hashlib.sha256(lock_mod.dump(lk).encode()).hexdigest()  # what the base's manifest records
    return SiteBase(Base(lk.name, lk.version, "", digest), frozenset(have), "lock")
