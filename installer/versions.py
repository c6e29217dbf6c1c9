"""Which versions a cluster runs and which a bundle brings: the record of the last successful apply, the version
policy of `installer upgrade`, and the version changes the evidence report lists per host.

Pure: fed by the recorded versions (StateDir.applied), the signed manifest's components and the inventory.
The policy: `upgrade` moves Kubernetes to a later patch release of the same MAJOR.MINOR only (1.10.3 -> 1.10.4);
it refuses a minor or major jump and a downgrade, and does nothing when the cluster already runs the bundle's
release. `apply` never changes the Kubernetes version of a recorded cluster (guard_apply): one way to upgrade.
An upgrade that stops on a host says what it left (stopped): the hosts done, the one it stopped on, the untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from contract.bundle import contents
from contract.bundle.contents import Component
from contract.errors import EXIT_INVALID, Error
from installer import plan_rules
from installer import render as render_mod
from installer.components import COMPONENTS, VERSIONS
from installer.inventory import Inventory
from installer.plan_model import CONTROL, Plan, StepKind

KUBERNETES = "kubernetes"
# what a component is called in the signed manifest (the bundler's `binary/<name>`, `rpm/<name>`) -> in reports,
# and the version an rpm or an executable is part of (from the component table)
COMPONENT_VERSIONS = {v.manifest: v.name for v in VERSIONS}
PACKAGE_COMPONENTS = {v.package: v.name for v in VERSIONS if v.package}
BINARY_COMPONENTS = {b.name: b.version for c in COMPONENTS for b in c.binaries if b.version}
_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
UPGRADING = "checking the upgrade's Kubernetes version"


def component_versions(components: Iterable[Component]) -> Dict[str, str]:
    """{component: version} of a bundle's signed manifest components (kubernetes, etcd, flannel, cni, docker...)."""
    by_key = contents.versions(components)
    return {v: by_key[k] for k, v in COMPONENT_VERSIONS.items() if k in by_key}


def host_versions(inv: Inventory, versions: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """{host: {component: version}} of what each inventory host runs by its roles, from the bundle's versions."""
    out: Dict[str, Dict[str, str]] = {}
    for h in inv.hosts:
        comps: Set[str] = set()
        for path in render_mod.binaries_for(h):
            name = path.rsplit("/", 1)[-1]
            if path.startswith(render_mod.CNI_BIN_DIR + "/"):
                comps.add("cni")
            else:
                comps.add(BINARY_COMPONENTS.get(name, KUBERNETES))  # kube-*, kubelet, kubectl
        comps.update(PACKAGE_COMPONENTS[p] for p in plan_rules.wanted_packages(h) if p in PACKAGE_COMPONENTS)
        out[h.name] = {c: versions[c] for c in sorted(comps) if c in versions}
    return out


def release(version: str, what: str) -> Tuple[int, int, int]:
    """(major, minor, patch) of "1.10.3" or "v1.10.3"; anything else is an Error naming `what` it came from."""
    m = _RELEASE.fullmatch(version.strip())
    if m is None:
        raise Error(f"{what} {version!r} is not a Kubernetes release version (MAJOR.MINOR.PATCH, e.g. 1.10.4)",
                    context=UPGRADING, exit_code=EXIT_INVALID,
                    hint="a bundle's Kubernetes version is its spec's kubernetes-server version (apply records it): "
                         "build the bundle with a release version; nothing was changed")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@dataclass(frozen=True)
class Decision:
    """What upgrade does with a bundle: go from `current` to `target`, or nothing when they are the same."""

    current: str
    target: str

    @property
    def same(self) -> bool:
        return release(self.current, "the recorded version") == release(self.target, "the bundle's version")

    def to_dict(self) -> dict:
        return {"from": self.current, "to": self.target, "nothing_to_do": self.same}


def recorded_kubernetes(record: Optional[dict]) -> Optional[str]:
    """The Kubernetes version the last successful apply recorded, or None without a record."""
    return None if record is None else record.get(KUBERNETES)


def decide(record: Optional[dict], components: Iterable[Component], record_path: Path) -> Decision:
    """The version policy: a later patch release of the recorded MAJOR.MINOR, or the same release (nothing to
    do). No record, a bundle without Kubernetes, a minor/major jump or a downgrade is an Error (exit 2)."""
    target = component_versions(components).get(KUBERNETES)
    if target is None:
        raise Error("the bundle names no Kubernetes version (no kubernetes-server in its signed manifest)",
                    context=UPGRADING, exit_code=EXIT_INVALID,
                    hint="build the bundle with the default spec (it has kubernetes-server); nothing was changed")
    current = recorded_kubernetes(record)
    if current is None:
        raise Error(f"no record of the Kubernetes version the cluster runs ({record_path} does not exist)",
                    context=UPGRADING, exit_code=EXIT_INVALID,
                    hint="pass the --state directory the cluster was applied with; a cluster applied before the "
                         "installer kept this record gets it from `installer apply` with the bundle it runs now "
                         "(it changes nothing on a converged cluster), then upgrade; nothing was changed")
    cur, new = release(current, "the recorded version"), release(target, "the bundle's version")
    if new[:2] != cur[:2]:
        jump = "major" if new[0] != cur[0] else "minor"
        raise Error(f"Kubernetes {current} -> {target} is a {jump} version change; upgrade moves only to a later "
                    f"patch release of {cur[0]}.{cur[1]}", context=UPGRADING, exit_code=EXIT_INVALID,
                    hint=f"use a bundle with Kubernetes {cur[0]}.{cur[1]}.x (x > {cur[2]}); a {jump} version "
                         "change is not supported in place; nothing was changed")
    if new < cur:
        raise Error(f"Kubernetes {target} is older than the {current} the cluster runs: upgrade does not downgrade",
                    context=UPGRADING, exit_code=EXIT_INVALID,
                    hint=f"use a bundle with Kubernetes {current} or a later {cur[0]}.{cur[1]} patch release; "
                         "nothing was changed")
    return Decision(current, target)


def guard_apply(record: Optional[dict], components: Iterable[Component], record_path: Path) -> None:
    """apply (and add-node, certs renew) keep the Kubernetes version the cluster was recorded with."""
    current, target = recorded_kubernetes(record), component_versions(components).get(KUBERNETES)
    if current is None or target is None or current == target:
        return
    raise Error(f"the cluster runs Kubernetes {current} (recorded in {record_path}) and the bundle has {target}: "
                "apply does not change the Kubernetes version", context="checking the bundle's Kubernetes version",
                exit_code=EXIT_INVALID,
                hint="`installer upgrade` with the same options moves to a later patch release (it checks the "
                     f"version policy first), or apply the bundle with Kubernetes {current}; nothing was changed")


def applied_record(bundle: Mapping[str, str], versions: Mapping[str, str], hosts: Mapping[str, Mapping[str, str]],
                   previous: Optional[dict], converged: Optional[List[str]] = None) -> dict:
    """What StateDir.set_applied keeps after a successful run: the bundle, its versions, and per host the versions
    it runs (converged: the hosts this run brought to the bundle, all when None; the others keep their record)."""
    before = dict((previous or {}).get("hosts") or {})
    names = list(hosts) if converged is None else [n for n in converged if n in hosts]
    before.update({n: dict(hosts[n]) for n in names})
    return {"bundle": dict(bundle), KUBERNETES: versions.get(KUBERNETES), "versions": dict(versions),
            "hosts": {n: before[n] for n in sorted(before)}}


def changes(previous: Optional[dict], hosts: Mapping[str, Mapping[str, str]],
            converged: Optional[List[str]] = None) -> Dict[str, Dict[str, Dict[str, str]]]:
    """{host: {component: {"from": old, "to": new}}} for the converged hosts that ran another version before
    (a host without a record, e.g. new, gets its versions installed: not a change of version)."""
    before = (previous or {}).get("hosts") or {}
    out: Dict[str, Dict[str, Dict[str, str]]] = {}
    for name in (list(hosts) if converged is None else converged):
        old, new = before.get(name) or {}, hosts.get(name) or {}
        diff = {c: {"from": old[c], "to": v} for c, v in sorted(new.items()) if c in old and old[c] != v}
        if diff:
            out[name] = diff
    return out


def evidence_lines(r: Optional[dict]) -> List[str]:
    """The report's lines of the version changes: the Kubernetes move of an upgrade, then per host."""
    if not r:
        return []
    lines = []
    if r.get("upgrade"):
        u = r["upgrade"]
        lines.append(f"upgrade: Kubernetes {u['from']} -> {u['to']}")
    for host, comps in sorted((r.get("hosts") or {}).items()):
        lines.append(f"{host}: " + ", ".join(f"{c} {v['from']} -> {v['to']}" for c, v in comps.items()))
    return lines


def _node_of(step: Mapping[str, str]) -> Optional[str]:
    """The host a step changes: its own, or the node a drain/uncordon from the control host is about."""
    if step["host"] != CONTROL:
        return step["host"]
    return step["target"] if step["kind"] in (str(StepKind.DRAIN), str(StepKind.UNCORDON)) else None


def progress(plan: Plan, executed: Sequence[Mapping[str, str]],
             failed: Sequence[Mapping[str, str]]) -> Dict[str, List[str]]:
    """After a run that stopped, the hosts (in plan order) by what happened to them: "failed" (a step failed
    there, or the gate after its steps), "done" (every step planned for them ran), "partly" (some ran),
    "untouched" (none ran); `executed` and `failed`: the steps that ran and those that failed (Outcome.executed,
    Outcome.failed, whose gates name the hosts of the wave they guard in "after")."""
    ran = {(e["host"], e["kind"], e["target"]) for e in executed}
    bad = {n for f in failed for n in ([_node_of(f)] if _node_of(f) else f.get("after") or ())}
    planned: Dict[str, List[Tuple[str, str, str]]] = {}
    for s in plan.steps:
        d = s.to_dict()
        node = _node_of(d) if s.acts else None
        if node is not None:
            planned.setdefault(node, []).append((d["host"], d["kind"], d["target"]))
    out: Dict[str, List[str]] = {"failed": [], "done": [], "partly": [], "untouched": []}
    for host, steps in planned.items():
        n = sum(k in ran for k in steps)
        out["failed" if host in bad else "done" if n == len(steps) else "partly" if n else "untouched"].append(host)
    return out


def _names(hosts: Sequence[str]) -> str:
    return ", ".join(hosts) or "none"


def stopped(e: Error, plan: Plan, executed: Sequence[Mapping[str, str]], failed: Sequence[Mapping[str, str]],
            decision: Decision) -> Error:
    """The error of an upgrade that stopped on a host, saying what it left and that the same command resumes."""
    p = progress(plan, executed, failed)
    drained = [x["target"] for x in executed if x["kind"] == str(StepKind.DRAIN)]
    cordoned = [n for n in drained if not any(x["kind"] == str(StepKind.UNCORDON) and x["target"] == n
                                              for x in executed)]
    e.details = list(e.details) + [
        f"the upgrade to {decision.target} stopped on {', '.join(p['failed']) or 'a step of the control host'}"
        + (f" (left cordoned: {', '.join(cordoned)})" if cordoned else "") + f": done on {_names(p['done'])}"
        + (f"; partly done on {', '.join(p['partly'])}" if p["partly"] else "")
        + f"; not touched: {_names(p['untouched'])}"]
    resume = (f"then run `installer upgrade` with the same bundle again: it resumes where this run stopped "
              f"(hosts already at {decision.target} are not touched again"
              + (", a node left cordoned is uncordoned once it is upgraded)" if cordoned else ")"))
    e.hint = f"{e.hint}; {resume}" if e.hint else f"fix the cause, {resume}"
    return e
