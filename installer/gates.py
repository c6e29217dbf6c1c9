"""The health gates between waves: one handler per Gate. A handler only reads: its probe says whether the
condition holds, and when it is not reached in time, which hosts to name and the error with their logs.
The executor polls the probe and does whatever a passed gate lets the run record."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import requests

from contract.errors import Error
from installer import checks as checks_mod
from installer import harbor_install
from installer.plan_model import CONTROL, Gate, Step

Probe = Callable[[], Tuple[bool, str]]  # (holds, detail)
HINT = ("the unit logs above usually say why; fix it and run apply again (it resumes: changed units are still "
        "restarted)")


@dataclass(frozen=True)
class Env:
    """What a gate reads: the site (inventory, PKI, registry access), the session, and logs for its error."""

    site: Any  # installer.site.Site
    session: requests.Session
    unit_log: Callable[[str, str], List[str]]  # (host, unit) -> the last lines of the unit's journal
    harbor_log: Callable[[str], List[str]]  # host -> the tail of Harbor's install log there


def _etcd_results(site, session) -> List[checks_mod.Result]:
    """/health of the inventory's members and of the recorded ones outside its etcd group (a member that leaves
    is one until it was removed)."""
    results = checks_mod.etcd_health(site.inv, site.pki, session)
    state = getattr(site, "state", None)
    recorded = (state.etcd_members() if state is not None else None) or {}
    extra = {n: a for n, a in recorded.items() if n not in {r.target for r in results}}
    return results + (checks_mod.etcd_health_of(site.pki, session, extra) if extra else [])


def _etcd_ok(site, session, members: Sequence[str]) -> Tuple[bool, str]:
    """All of `members` (every member when empty) answer /health."""
    results = [r for r in _etcd_results(site, session) if not members or r.target in members]
    missing = [n for n in members if n not in {r.target for r in results}]
    results += [checks_mod.Result("etcd health", n, False, "not a member the inventory or the record names")
                for n in missing]
    return checks_mod.all_ok(results)


# -- probes (read only)
def _harbor_probe(env: Env, s: Step) -> Probe:
    return functools.partial(harbor_install.probe, checks_mod.registry_base(env.site.inv), env.session,
                             env.site.registry_access.get("verify", True))


def _etcd_probe(env: Env, s: Step) -> Probe:
    return functools.partial(_etcd_ok, env.site, env.session, s.items)


def _apiserver_probe(env: Env, s: Step) -> Probe:
    inv = env.site.inv
    return functools.partial(checks_mod.apiserver_healthz, inv, env.site.pki, env.session, inv.host(s.host).address,
                             inv.cluster.apiserver_port)


def _vip_probe(env: Env, s: Step) -> Probe:
    inv = env.site.inv
    return functools.partial(checks_mod.apiserver_healthz, inv, env.site.pki, env.session, inv.cluster.vip,
                             inv.cluster.lb_port)


def _nodes_probe(env: Env, s: Step) -> Probe:
    return functools.partial(checks_mod.nodes_ready, env.site.inv, env.site.pki, env.session, s.items)


# -- whom a gate not reached names
def _named_hosts(env: Env, s: Step) -> List[str]:
    hosts = list(s.items) if s.items else [s.host]
    return [h for h in hosts if h != CONTROL]


def _unhealthy_members(env: Env, s: Step) -> List[str]:
    """Exactly the members of the gate that are not healthy (all of them when none says so)."""
    inv = env.site.inv
    hosts = _named_hosts(env, s)
    hosts = [r.target for r in _etcd_results(env.site, env.session) if not r.ok and r.target in hosts]
    return hosts or [m.name for m in inv.etcd_members if m.name in s.items]


# -- the errors
def _not_reached(env: Env, s: Step, hosts: List[str], detail: str, timeout: float,
                 extra: Sequence[str] = ()) -> Error:
    lines = [f"{h} {u}: {ln}" for h in hosts for u in s.units for ln in env.unit_log(h, u)[-10:]] + list(extra)
    return Error(f"{', '.join(hosts) or s.host}: health gate {s.target} not reached within {timeout:.0f} s: {detail}",
                 context=f"waiting for {s.reason}", details=lines, hint=HINT)


def _harbor_not_reached(env: Env, s: Step, hosts: List[str], detail: str, timeout: float) -> Error:
    return _not_reached(env, s, hosts, detail, timeout, extra=env.harbor_log(hosts[0]))


def _quorum_at_risk(env: Env, s: Step, hosts: List[str], detail: str, timeout: float) -> Error:
    return Error(f"{', '.join(hosts)}: etcd not healthy, so no other member is restarted (that would lose "
                 f"quorum): {detail}", context=f"waiting {timeout:.0f} s for {s.reason}",
                 details=[f"{h} etcd: {ln}" for h in hosts for ln in env.unit_log(h, "etcd")[-10:]],
                 hint=f"start or repair etcd on {', '.join(hosts)} (systemctl status etcd; journalctl -u "
                      f"etcd), then run apply again: members already restarted stay done, the rest follow "
                      f"one at a time")


def _membership_at_risk(env: Env, s: Step, hosts: List[str], detail: str, timeout: float) -> Error:
    return Error(f"{', '.join(hosts)}: etcd not healthy, so the etcd membership is not changed (a member added or "
                 f"removed now could lose quorum): {detail}", context=f"waiting {timeout:.0f} s for {s.reason}",
                 details=[f"{h} etcd: {ln}" for h in hosts for ln in env.unit_log(h, "etcd")[-10:]],
                 hint=f"start or repair etcd on {', '.join(hosts)} (systemctl status etcd; journalctl -u etcd), "
                      "then run apply again: the change is made then")


@dataclass(frozen=True)
class Handler:
    """One gate: its probe, whom to name and the error when it is not reached in time."""

    probe: Callable[[Env, Step], Probe]
    blame: Callable[[Env, Step], List[str]] = _named_hosts
    error: Callable[[Env, Step, List[str], str, float], Error] = _not_reached
    slow: bool = False  # waits Options.harbor_timeout instead of Options.gate_timeout


HANDLERS: Dict[Gate, Handler] = {
    Gate.HARBOR_API: Handler(_harbor_probe, error=_harbor_not_reached, slow=True),
    Gate.ETCD_HEALTH: Handler(_etcd_probe, blame=_unhealthy_members),
    Gate.ETCD_OTHERS_HEALTHY: Handler(_etcd_probe, blame=_unhealthy_members, error=_quorum_at_risk),
    Gate.ETCD_MEMBERS_HEALTHY: Handler(_etcd_probe, blame=_unhealthy_members, error=_membership_at_risk),
    Gate.APISERVER_HEALTHZ: Handler(_apiserver_probe),
    Gate.VIP_HEALTHZ: Handler(_vip_probe),
    Gate.NODE_READY: Handler(_nodes_probe),
}
