"""Facts: every host's state in one round trip each, and what the control host sees of registry and etcd.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Optional, Sequence, Tuple

import requests

from contract.bundle import layout
from contract.errors import Error
from installer import checks as checks_mod
from installer import drain, etcd_auth, etcd_member, harbor_install, plan_rules
from installer import facts as facts_mod
from installer.hosts.connector import failures, run_on
from installer.options import Hosts, Options, first_line
from installer.plan_model import ControlState, HostState
from installer.site import EXTRA_UNITS, Site


def gather_states(site: Site, hosts: Hosts, names: Sequence[str], opts: Options, *,
                  read_only: bool = False) -> Dict[str, HostState]:
    """Facts of every host in parallel, plus the current content of changed text files (for diffs).

    read_only (plan): the hosts' hash caches are used but not updated, so nothing is written to a host."""

    def one(name: str) -> HostState:
        d = site.desired[name]
        units = list(d.units) + list(EXTRA_UNITS)
        members = {h.name: h for h in site.inv.etcd_members}  # the registry host is not in inv.hosts
        probes = etcd_auth.probes(members[name]) + etcd_member.probes(members[name]) if name in members else []
        f = facts_mod.gather(hosts[name], d.managed_paths(), units, probes=probes, update_cache=not read_only)
        contents = {}
        for path, want in d.files.items():
            have = f.files.get(path)
            if have is not None and have.sha256 != hashlib.sha256(want.content).hexdigest() \
                    and not plan_rules.is_secret(path, want):
                contents[path] = hosts[name].get(path)
        return HostState(f, contents)

    results = run_on(names, one, opts.max_parallel)
    bad = failures(results)
    if bad:
        raise Error(f"cannot read the state of {len(bad)} host(s): {', '.join(sorted(bad))}",
                    context="gathering facts before planning",
                    details=[f"{h}: {first_line(e)}" for h, e in sorted(bad.items())],
                    hint="check that each host is up and reachable over ssh with the inventory's user and key; "
                         "nothing was changed")
    return {n: r for n, r in results.items()}  # type: ignore[misc]


def control_state(site: Site, session: requests.Session) -> ControlState:
    """Registry and etcd as the control host sees them (unknown when unreachable: the plan then acts)."""
    inv = site.inv
    missing: Optional[Tuple[str, ...]] = None
    total = 0
    up: Optional[bool] = None
    detail = ""
    if inv.registry.mode == "install":
        up, detail = harbor_install.probe(checks_mod.registry_base(inv), session,
                                          site.registry_access.get("verify", True))
    if up is not False:
        try:
            missing, total = checks_mod.images_missing(inv, site.bundle.dir / layout.IMAGES_DIR, site.naming, session,
                                                       **site.registry_access)
        except Error:
            missing = None
    value = checks_mod.flannel_config(inv, site.pki, session)
    recorded = site.state.etcd_members()
    health = checks_mod.etcd_health(inv, site.pki, session)
    extra = {n: a for n, a in (recorded or {}).items() if n not in {r.target for r in health}}
    health += checks_mod.etcd_health_of(site.pki, session, extra) if extra else []  # members leaving the group
    unhealthy = tuple(r.target for r in health if not r.ok)
    return ControlState(images_missing=missing, images_total=total, flannel_config=value, harbor_up=up,
                        harbor_detail=detail, etcd_unhealthy=unhealthy,
                        etcd_recorded=recorded is not None, etcd_members=tuple((recorded or {}).items()),
                        etcd_peers=checks_mod.etcd_peer_urls(inv, site.pki, session) if recorded else None,
                        cordoned=drain.marked(inv, site.pki, session) if inv.nodes else ())
