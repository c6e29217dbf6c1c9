"""The site receipt: what the air-gapped side holds, written by `installer receipt`, read by `bundler build --since`.

It holds no secret: for each bundle the installer keeps unpacked, its identity and every file's path, size and
sha256 (checked against the disk when the receipt is written, so a lost or damaged file is not claimed); the
blobs the site registry holds; and per host the RPMs installed and the sha256 of the executables the installer
put there. A delta is computed against what the site really has, not against a copy kept on the build side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from contract.errors import LocatedProblem, ValidationError

KIND = "k8s-offline-receipt"
FORMAT = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HINT = "write it again with `installer receipt -i INVENTORY -o FILE` on the site"


@dataclass(frozen=True)
class ReceiptFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ReceiptBundle:
    """A bundle the site keeps unpacked (the base of a later delta)."""

    name: str
    version: str
    manifest_sha256: str
    lock_sha256: str
    files: tuple[ReceiptFile, ...]


@dataclass(frozen=True)
class ReceiptHost:
    rpms: tuple[str, ...] = ()  # name-version-release.arch
    binaries: Mapping[str, str] = field(default_factory=dict)  # absolute path -> sha256


@dataclass(frozen=True)
class Receipt:
    created: str
    bundles: tuple[ReceiptBundle, ...]
    registry_blobs: tuple[str, ...] = ()  # sha256:<hex>, of every repository the registry lists
    registry: str = ""  # which registry (host:port), "" when it was not asked
    hosts: Mapping[str, ReceiptHost] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "kind": KIND, "format": FORMAT, "created": self.created,
            "bundles": [{"name": b.name, "version": b.version, "manifest_sha256": b.manifest_sha256,
                         "lock_sha256": b.lock_sha256,
                         "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in b.files]}
                        for b in self.bundles],
            "registry": {"address": self.registry, "blobs": list(self.registry_blobs)},
            "hosts": {n: {"rpms": list(h.rpms), "binaries": dict(sorted(h.binaries.items()))}
                      for n, h in sorted(self.hosts.items())},
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Receipt:
        problems = _problems(data)
        if problems:
            n = len(problems)
            raise ValidationError(f"{source}: {problems[0]}" + (f" (and {n - 1} more)" if n > 1 else ""),
                                  context="reading the site receipt", details=[str(p) for p in problems],
                                  hint=_HINT)
        return cls(
            created=data["created"],
            bundles=tuple(ReceiptBundle(b["name"], b["version"], b["manifest_sha256"], b["lock_sha256"],
                                        tuple(ReceiptFile(f["path"], f["size"], f["sha256"]) for f in b["files"]))
                          for b in data["bundles"]),
            registry=data["registry"]["address"], registry_blobs=tuple(data["registry"]["blobs"]),
            hosts={n: ReceiptHost(tuple(h["rpms"]), dict(h["binaries"])) for n, h in data["hosts"].items()})


def is_receipt(data: Any) -> bool:
    """Whether decoded YAML/JSON claims to be a receipt (then it must validate as one)."""
    return isinstance(data, dict) and data.get("kind") == KIND


def _keys(where: str, data: Any, keys: tuple[str, ...]) -> list[LocatedProblem]:
    if not isinstance(data, dict):
        return [LocatedProblem(where, "must be an object")]
    out = [LocatedProblem(f"{where}.{k}".lstrip("."), "unknown field") for k in sorted(set(data) - set(keys))]
    return out + [LocatedProblem(f"{where}.{k}".lstrip("."), "missing") for k in keys if k not in data]


def _problems(data: Any) -> list[LocatedProblem]:
    out = _keys("", data, ("kind", "format", "created", "bundles", "registry", "hosts"))
    if out:
        return out
    if data["format"] != FORMAT:
        out.append(LocatedProblem("format", f"unsupported {data['format']!r}, expected {FORMAT}",
                                  hint="use a bundler matching the installer"))
    if not isinstance(data["bundles"], list):
        out.append(LocatedProblem("bundles", "must be a list"))
    else:
        for i, b in enumerate(data["bundles"]):
            where = f"bundles[{i}]"
            got = _keys(where, b, ("name", "version", "manifest_sha256", "lock_sha256", "files"))
            if got:
                out += got
                continue
            for k in ("manifest_sha256", "lock_sha256"):
                if not (isinstance(b[k], str) and _HEX64.match(b[k])):
                    out.append(LocatedProblem(f"{where}.{k}", "must be 64 lowercase hex digits"))
            out += _file_problems(where, b["files"])
    reg = data["registry"]
    out += _keys("registry", reg, ("address", "blobs"))
    if isinstance(reg, dict) and isinstance(reg.get("blobs"), list):
        out += [LocatedProblem(f"registry.blobs[{i}]", "must be sha256:<64 hex digits>")
                for i, d in enumerate(reg["blobs"]) if not (isinstance(d, str) and _DIGEST.match(d))]
    if not isinstance(data["hosts"], dict):
        out.append(LocatedProblem("hosts", "must be an object of host name: what it has"))
    else:
        for name, h in data["hosts"].items():
            got = _keys(f"hosts.{name}", h, ("rpms", "binaries"))
            if got:
                out += got
            elif not isinstance(h["rpms"], list) or not isinstance(h["binaries"], dict):
                out.append(LocatedProblem(f"hosts.{name}", "rpms must be a list and binaries an object"))
    return out


def _file_problems(where: str, files: Any) -> list[LocatedProblem]:
    if not isinstance(files, list):
        return [LocatedProblem(f"{where}.files", "must be a list")]
    out = []
    for j, f in enumerate(files):
        w = f"{where}.files[{j}]"
        got = _keys(w, f, ("path", "size", "sha256"))
        if got:
            out += got
            continue
        if not (isinstance(f["sha256"], str) and _HEX64.match(f["sha256"])):
            out.append(LocatedProblem(f"{w}.sha256", "must be 64 lowercase hex digits"))
        if not (isinstance(f["size"], int) and f["size"] >= 0):
            out.append(LocatedProblem(f"{w}.size", "must be an integer >= 0"))
    return out


def best_base(receipt: Receipt, wanted: Mapping[str, int]) -> Optional[ReceiptBundle]:
    """The receipt's bundle holding the most bytes of `wanted` (sha256 -> size), or None when it lists none."""
    best, best_bytes = None, -1
    for b in receipt.bundles:
        have = {f.sha256 for f in b.files}
        n = sum(size for sha, size in wanted.items() if sha in have)
        if n > best_bytes:
            best, best_bytes = b, n
    return best
