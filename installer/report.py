"""The evidence report of an apply: what was planned, done, skipped and checked, the bundle's trust, and the
version changes per host (apply_command adds them: installer.versions).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

from contract.bundle import contents
from contract.bundle.contents import Check, SourceKind, TrustEntry
from installer import etcd_backup, versions
from installer.executor import Outcome
from installer.plan_model import Plan
from installer.site import Site


def evidence(site: Site, plan: Plan, outcome: Outcome, results, seconds: float) -> dict:
    """What was verified, pushed, changed per host, and the check results."""
    changed: Dict[str, List[str]] = {}
    for e in outcome.executed:
        if e["kind"] in ("daemon-reload",):
            continue
        changed.setdefault(e["host"], []).append(f"{e['kind']} {e['target']}" + (
            f" ({e['detail']})" if e.get("detail") else ""))
    return {
        "bundle": {"name": site.bundle.name, "version": site.bundle.version,
                   "manifest_sha256": site.bundle.digest, "signer_fingerprint": site.bundle.fingerprint,
                   "verified": "signature and every member's sha256", "reused_unpacked": site.bundle.reused,
                   "dir": str(site.bundle.dir)},
        "pki": site.pki_report.lines() if site.pki_report else [],
        "trust": trust_summary(site.bundle.trust),
        "seed": outcome.seed,
        "changed": changed,
        "nothing_to_do": plan.empty,
        "skipped": outcome.skipped,
        "deferred": list(plan.deferred),
        "checks": results.as_dict() if results is not None else None,
        "seconds": round(seconds, 2),
    }


def trust_summary(trust: Iterable[TrustEntry]) -> dict:
    """How the bundle's sources were checked at build time (the signed manifest's typed trust section), with the
    warnings and notes every reader words the same way (contract.bundle.contents.findings)."""
    trust = tuple(trust)
    of = {k: [t for t in trust if t.kind is k] for k in SourceKind}
    repodata = {t.name: t for t in of[SourceKind.RPM_REPODATA]}
    return {
        "sources": [t.to_dict() for t in trust],
        "repos": {t.name: _repo_text(t, repodata.get(t.name)) for t in of[SourceKind.RPM_REPO]},
        "gpgcheck_off": sorted(t.name for t in of[SourceKind.RPM_REPO] if t.check is Check.UNCHECKED),
        "unchecked_rpms": sorted(t.key for t in of[SourceKind.RPM] if t.check is Check.UNCHECKED),
        "first_seen_binaries": sorted(t.key for t in of[SourceKind.BINARY] if t.check is Check.FIRST_SEEN),
        "signed_rpms": sum(1 for t in of[SourceKind.RPM] if t.check is Check.GPG_SIGNED),
        "warnings": list(contents.warnings(trust)),
        "notes": list(contents.notes(trust)),
    }


_REPOMD = {Check.GPG_SIGNED: "signed", Check.UNSIGNED: "unsigned"}


def _repo_text(repo: TrustEntry, repodata: Optional[TrustEntry]) -> str:
    """'key <fingerprints>; repomd signed|unsigned|unchecked', or 'gpgcheck off', from the typed entries."""
    if repo.check is not Check.GPG_SIGNED:
        return "gpgcheck off" if repo.check is Check.UNCHECKED else f"packages {repo.check.value}"
    metadata = _REPOMD.get(repodata.check, repodata.check.value) if repodata is not None else "unrecorded"
    return f"key {','.join(repo.keys)}; repomd {metadata}"


def evidence_text(r: dict) -> str:
    b = r["bundle"]
    lines = [f"bundle {b['name']} {b['version']}: manifest sha256 {b['manifest_sha256']}",
             f"  signed by {b['signer_fingerprint']}; verified {b['verified']}"
             + ("; unpacked copy reused" if b["reused_unpacked"] else "; unpacked")]
    t = r.get("trust") or {}
    if t.get("repos"):
        lines.append(f"  RPMs: {t['signed_rpms']} signature-checked at build time against pinned keys; "
                     "yum checks them again on every host (gpgcheck=1)")
        lines += [f"    repo {name}: {how}" for name, how in sorted(t["repos"].items())]
    lines += [f"  WARNING: {w}" for w in t.get("warnings", [])]
    lines += [f"  note: {n}" for n in t.get("notes", [])]
    issued = [ln for ln in r["pki"] if ": issued" in ln or "created" in ln]
    lines.append(f"pki: {len(issued)} issued/created" + (f" ({'; '.join(issued)})" if issued else ""))
    if r["seed"]:
        t = r["seed"]["totals"]
        lines.append(f"registry {r['seed']['registry']}/{r['seed']['project']}: {t['images']} images, "
                     f"{t['images_present']} already present, {t['blobs_pushed']} blobs pushed")
    if r["nothing_to_do"]:
        lines.append("nothing to do: every host matched the desired state")
    lines += etcd_backup.evidence_lines(r.get("etcd_backup"))  # taken before the changes below
    lines += versions.evidence_lines(r.get("versions"))  # component: old -> new, per host
    for host, items in sorted(r["changed"].items()):
        lines.append(f"{host}: {len(items)} change(s)")
        lines += [f"  {i}" for i in items]
    lines += [f"skipped: {s}" for s in r["skipped"]]
    lines += [f"deferred: {d}" for d in r["deferred"]]
    if r["checks"]:
        lines.append("checks:")
        lines += [f"  {c['status']:<5} {c['name']:<24} {c['target']}: {c['detail']}" for c in r["checks"]["results"]]
    lines.append(f"took {r['seconds']} s")
    return "\n".join(lines)
