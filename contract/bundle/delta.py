"""Delta bundles: the signed manifest of a complete bundle, carrying only the members its base lacks.

A delta is a bundle stream like any other: manifest.json is the *complete* new bundle's manifest (byte for
byte the one a full build of the same inputs signs), then its signature(s), then delta.json, then the members
the base does not hold, in manifest order. delta.json names the base (the manifest sha256 of the unpacked
bundle it needs, or only the lock digest when the delta was computed from an old bundle-lock.yaml) and lists
every path taken from it.

delta.json is not signed, and need not be: it only says where the members that are not carried are to be
found. Every one of them is checked against the signed manifest's size and sha256 wherever it comes from,
so a changed delta.json can make a combination fail, never succeed with other content. What it does buy is
a clear refusal of the wrong base before anything is read, and the list of what a base lacks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from contract.bundle import layout
from contract.bundle.manifest import FileEntry, Manifest
from contract.errors import Error, LocatedProblem, ValidationError

FORMAT = 1
MAX_SIZE = 64 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEYS = ("format", "base", "from_base")
_BASE_KEYS = ("name", "version", "manifest_sha256", "lock_sha256")
_HINT = "the delta bundle is damaged or was not written by a compatible bundler; copy it again or rebuild it"


@dataclass(frozen=True)
class Base:
    """The bundle a delta needs: by its manifest's sha256, or ("" there) only by its lock's sha256."""

    name: str
    version: str
    manifest_sha256: str
    lock_sha256: str

    def describe(self) -> str:
        which = (f"manifest sha256 {self.manifest_sha256[:16]}" if self.manifest_sha256
                 else f"built from the lock with sha256 {self.lock_sha256[:16]}")
        label = f"{self.name} {self.version}" if self.name else "the base bundle"
        return f"{label} ({which})"


@dataclass(frozen=True)
class Delta:
    """What delta.json says: the base, and every path of the complete bundle taken from it."""

    base: Base
    from_base: tuple[str, ...]

    def to_bytes(self) -> bytes:
        data = {"format": FORMAT, "base": {k: getattr(self.base, k) for k in _BASE_KEYS},
                "from_base": list(self.from_base)}
        return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, manifest: Manifest) -> Delta:
        """Parse and check delta.json against the signed manifest it travels with."""
        try:
            decoded = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValidationError(f"{layout.DELTA} is not valid JSON: {e}", hint=_HINT) from None
        problems = _problems(decoded, manifest)
        if problems:
            n = len(problems)
            raise ValidationError(f"{layout.DELTA}: {problems[0]}" + (f" (and {n - 1} more)" if n > 1 else ""),
                                  context=f"reading {layout.DELTA}", details=[str(p) for p in problems], hint=_HINT)
        b = decoded["base"]
        return cls(Base(b["name"], b["version"], b["manifest_sha256"], b["lock_sha256"]),
                   tuple(decoded["from_base"]))


def _problems(data: Any, manifest: Manifest) -> list[LocatedProblem]:
    if not isinstance(data, dict):
        return [LocatedProblem("", "must be a JSON object")]
    out = [LocatedProblem(k, "unknown field") for k in sorted(set(data) - set(_KEYS))]
    out += [LocatedProblem(k, "missing") for k in _KEYS if k not in data]
    if out:
        return out
    if data["format"] != FORMAT:
        out.append(LocatedProblem("format", f"unsupported {data['format']!r}, expected {FORMAT}",
                                  hint="use an installer matching the bundler"))
    base = data["base"]
    if not isinstance(base, dict):
        out.append(LocatedProblem("base", "must be an object"))
    else:
        out += [LocatedProblem(f"base.{k}", "unknown field") for k in sorted(set(base) - set(_BASE_KEYS))]
        out += [LocatedProblem(f"base.{k}", "missing") for k in _BASE_KEYS if k not in base]
        for k in ("name", "version"):
            if k in base and not isinstance(base[k], str):
                out.append(LocatedProblem(f"base.{k}", "must be a string"))
        for k in ("manifest_sha256", "lock_sha256"):
            v = base.get(k)
            if k in base and not (isinstance(v, str) and (_HEX64.match(v) or (v == "" and k == "manifest_sha256"))):
                out.append(LocatedProblem(f"base.{k}", "must be 64 lowercase hex digits"
                                          + (" (or empty)" if k == "manifest_sha256" else "")))
    paths = data["from_base"]
    if not isinstance(paths, list):
        out.append(LocatedProblem("from_base", "must be a list of paths"))
        return out
    known = manifest.by_path()
    previous = None
    for i, p in enumerate(paths):
        if not isinstance(p, str) or p not in known:
            out.append(LocatedProblem(f"from_base[{i}]", f"{p!r} is not a file of the signed manifest"))
        elif previous is not None and p <= previous:
            out.append(LocatedProblem(f"from_base[{i}]", f"{p!r} is out of order or repeated (paths are sorted)"))
        previous = p if isinstance(p, str) else previous
    return out


def omitted(entries: Iterable[tuple[str, str]], have: set[str]) -> tuple[str, ...]:
    """The paths (of (path, sha256) pairs) whose content the base holds: what a delta does not carry."""
    return tuple(sorted(path for path, sha in entries if sha in have))


class BaseDir:
    """An unpacked bundle used as a delta's base: its files found by sha256 through its manifest.json (kept
    by unpack), else at the same path (unpacked by an installer that did not keep the manifest)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise Error(f"{self.root} is not a directory", context="opening the base of a delta bundle",
                        hint="pass the directory the base bundle was unpacked into")
        self.manifest: Optional[Manifest] = None
        self.manifest_sha256 = ""
        raw = self.root / layout.MANIFEST
        if raw.is_file():
            data = raw.read_bytes()
            self.manifest = Manifest.from_bytes(data)
            self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        self._by_sha: Mapping[str, str] = ({f.sha256: f.path for f in self.manifest.files}
                                           if self.manifest is not None else {})

    def describe(self) -> str:
        if self.manifest is None:
            return f"{self.root} (unpacked without its manifest)"
        return f"{self.root} ({self.manifest.name} {self.manifest.version}, manifest sha256 {self.manifest_sha256[:16]})"

    def check_is(self, base: Base) -> None:
        """Error unless this is the base the delta names (when this directory can tell)."""
        if self.manifest is None:
            return  # identity unknown: each file is still checked against the signed manifest
        same = (self.manifest_sha256 == base.manifest_sha256 if base.manifest_sha256
                else self.manifest.lock_sha256 == base.lock_sha256)
        if not same:
            raise Error(f"the delta needs {base.describe()} as its base, but {self.describe()} is another bundle",
                        context="combining a delta bundle with its base",
                        hint="give the directory that bundle was unpacked into, or carry the complete bundle")

    def source_for(self, entry: FileEntry) -> Optional[Path]:
        """The base's file with entry's content (by sha256, else at the same path), if it has the right size."""
        for rel in (self._by_sha.get(entry.sha256), entry.path):
            if rel is None:
                continue
            p = self.root / rel
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_size == entry.size:
                    return p
            except OSError:
                continue
        return None

    def sources(self, manifest: Manifest, delta: Delta) -> dict[str, Path]:
        """{path: base file} for everything the delta takes from the base; Error naming every one it lacks."""
        self.check_is(delta.base)
        entries = manifest.by_path()
        found, lacking = {}, []
        for path in delta.from_base:
            src = self.source_for(entries[path])
            if src is None:
                lacking.append(path)
            else:
                found[path] = src
        if lacking:
            raise Error(f"the base {self.describe()} lacks {len(lacking)} file(s) the delta takes from it, "
                        f"first {lacking[0]!r}", context="combining a delta bundle with its base",
                        details=lacking[:20],
                        hint=f"the delta was computed for {delta.base.describe()}; unpack that bundle completely "
                        "(or carry the complete bundle instead of the delta)")
        return found


def summary(manifest: Manifest, delta: Delta) -> dict:
    """Counts and bytes per kind of what the delta carries and what it takes from the base."""
    taken = set(delta.from_base)
    out = {"base": {k: getattr(delta.base, k) for k in _BASE_KEYS},
           "carried": {"files": 0, "bytes": 0, "kinds": {}}, "from_base": {"files": 0, "bytes": 0, "kinds": {}}}
    for f in manifest.files:
        side = out["from_base" if f.path in taken else "carried"]
        side["files"] += 1
        side["bytes"] += f.size
        k = side["kinds"].setdefault(layout.kind_of(f.path), {"files": 0, "bytes": 0})
        k["files"] += 1
        k["bytes"] += f.size
    return out
