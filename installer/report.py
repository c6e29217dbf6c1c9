"""The evidence report of an apply: what was planned, done, skipped and checked, the bundle's trust, and the
version changes per host (apply_command adds them: installer.versions).
"""

from __future__ import annotations

from typing import Dict, List, Mapping

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
        "trust": trust_summary(site.bundle.components),
        "seed": outcome.seed,
        "changed": changed,
        "nothing_to_do": plan.empty,
        "skipped": outcome.skipped,
        "deferred": list(plan.deferred),
        "checks": results.as_dict() if results is not None else None,
        "seconds": round(seconds, 2),
    }


def trust_summary(components: Mapping[str, str]) -> dict:
    """Where the bundle's artifacts were trusted from (as the bundler recorded it in the signed manifest)."""
    repos = {k[len("repo/"):]: v for k, v in components.items() if k.startswith("repo/")}
    trust = {k[len("trust/"):]: v for k, v in components.items() if k.startswith("trust/")}
    return {
        "repos": repos,
        "gpgcheck_off": sorted(r for r, v in repos.items() if v == "gpgcheck off"),
        "unchecked_rpms": sorted(k for k, v in trust.items() if k.startswith("rpm/") and "unchecked" in v),
        "first_seen_binaries": sorted(k for k, v in trust.items() if k.startswith("binary/") and v.endswith("first-seen")),
        "signed_rpms": sum(1 for k, v in trust.items() if k.startswith("rpm/") and v.startswith("signed by")),
    }


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
    if t.get("gpgcheck_off"):
        lines.append(f"  WARNING: repos with gpgcheck off in the spec: {', '.join(t['gpgcheck_off'])}; "
                     f"unchecked RPMs: {', '.join(t['unchecked_rpms']) or 'none'}")
    if t.get("first_seen_binaries"):
        lines.append(f"  binaries pinned when first seen (no upstream digest): {', '.join(t['first_seen_binaries'])}")
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
