"""`installer remove-node NAME...`: take nodes out of the cluster and off the installer's books.

The host must already be gone from the inventory file (the inventory stays the one description of the
cluster); its address, roles and ssh settings come from the state directory's host record (hosts.json, kept by
every apply). Refused: a host still in the inventory, one never recorded, an etcd member (apply removes members:
take it out of the etcd group and apply first); the last master cannot leave the inventory (it does not validate without one). In order, printed first as the plan:

  1. cordon the Node and delete its pods through the API (VIP, admin certificate); wait for them to go
  2. on the host: stop and disable its units (kubelet, kube-proxy, flanneld, docker, ...)
  3. delete the Node object, and flannel's lease of the host in etcd (the other hosts drop its routes)
  4. on the host: remove every file and binary the installer put there, kubelet's and CNI's state, the pod
     network's interfaces, and docker's data root (cluster.docker_data_root) unless --keep-data (packages stay installed)
  5. forget it: the host record, its pending restarts, its known_hosts entry

/etc/hosts of the remaining hosts still names it until the next `installer apply` (said at the end).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import requests

from contract.errors import Error
from installer import pki_material, plan_rules
from installer import render as render_mod
from installer.checks import client_tls
from installer.inventory import Host, Inventory
from installer.pki import Pki
from installer.state import StateDir

KEEP = frozenset({"/etc/hosts"})  # the OS's own file, only edited by the installer
STATE_DIRS = ("/var/lib/kubelet", "/var/lib/cni", "/run/flannel", "/etc/cni/net.d")
LINKS = ("cni0", "flannel.1")
DRAIN_TIMEOUT = 90.0
TIMEOUT = 15.0


@dataclass
class Removal:
    """What removing one host does (the plan), and afterwards what was done."""

    host: Host
    units: List[str]
    files: List[str]
    wipe: List[str]
    done: List[str] = field(default_factory=list)

    def plan_lines(self) -> List[str]:
        h = self.host
        return [f"{h.name} ({h.address}, {', '.join(h.roles)}):",
                f"  cordon and drain Node {h.name} (delete its pods through the API)",
                f"  stop and disable: {', '.join(self.units) or '(no units)'}",
                f"  delete Node {h.name} and its flannel lease",
                f"  remove {len(self.files)} installer file(s) and binaries; wipe {', '.join(self.wipe)}",
                f"  forget {h.name} in the state directory (host record, pending restarts, known_hosts)"]


def _refuse(msg: str, hint: str) -> Error:
    return Error(msg, context="removing nodes", hint=hint, exit_code=2)


def plan(inv: Inventory, state: StateDir, pki: Pki, names: Sequence[str], keep_data: bool) -> List[Removal]:
    """The removals, or an Error refusing the whole request before anything happens."""
    recorded = state.hosts()
    in_inventory = {h.name for h in inv.hosts}
    members = set((state.etcd_members() or {}).keys())
    out = []
    for name in names:
        if name in in_inventory:
            raise _refuse(f"{name} is still in the inventory", "take it out of the inventory file first (the "
                          "inventory describes the cluster that stays), then run remove-node again")
        if name not in recorded:
            raise _refuse(f"{name} is not a host this state directory knows (no earlier apply managed it)",
                          f"check the name and --state; known: {', '.join(sorted(recorded)) or 'none'}")
        host = Host.model_validate(recorded[name])
        if host.has("etcd") or name in members:
            raise _refuse(f"{name} is an etcd member: remove-node does not change etcd's membership",
                          f"take {name} out of the etcd group in the inventory and run `installer apply` (it removes "
                          "the member from the running cluster, quorum-safe, and stops etcd there), then remove "
                          "the host")
        out.append(_removal(inv, pki, host, keep_data))
    return out


def _removal(inv: Inventory, pki: Pki, host: Host, keep_data: bool) -> Removal:
    inv2 = inv.model_copy(update={"hosts": tuple(inv.hosts) + (host,)})
    files = set(render_mod.render_host(inv2, host, pki_files={}))
    try:
        files |= set(pki_material.material_for(pki, inv2, host))
    except Error:
        pass  # a certificate already gone: its file is removed by name below anyway
    files |= set(render_mod.binaries_for(host))
    files -= KEEP
    units = [u for u in reversed(plan_rules.wanted_units(host))]
    wipe = list(STATE_DIRS) + ([] if keep_data else [inv.cluster.docker_data_root])
    return Removal(host, units, sorted(files), wipe)


class Api:
    """The few API calls draining needs, through the VIP with the admin certificate."""

    def __init__(self, inv: Inventory, pki: Pki, session: requests.Session) -> None:
        self.base = f"https://{inv.cluster.vip}:{inv.cluster.lb_port}"
        self.session = session
        self.tls = dict(client_tls(pki, "admin"), timeout=TIMEOUT)

    def call(self, method: str, path: str, ok=(200, 201, 202, 404), **kw) -> requests.Response:
        try:
            r = self.session.request(method, self.base + path, **self.tls, **kw)
        except requests.RequestException as e:
            raise Error(f"the apiserver did not answer {method} {path}: {type(e).__name__}",
                        context="draining through the API (VIP)",
                        hint="check the apiservers and the VIP (installer check); nothing on the host was "
                             "changed yet if this was the drain") from None
        if r.status_code not in ok:
            raise Error(f"{method} {path}: HTTP {r.status_code}: {r.text.strip()[:200]}",
                        context="draining through the API (VIP)", hint="the apiserver's answer says why")
        return r

    def pods_on(self, node: str) -> List[dict]:
        r = self.call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3D" + node)
        return (r.json() or {}).get("items") or [] if r.status_code == 200 else []


def drain(api: Api, node: str, sleep: Callable[[float], None], clock: Callable[[], float]) -> str:
    api.call("PATCH", f"/api/v1/nodes/{node}", data=json.dumps({"spec": {"unschedulable": True}}),
             headers={"Content-Type": "application/merge-patch+json"})
    pods = api.pods_on(node)
    for p in pods:
        m = p.get("metadata") or {}
        api.call("DELETE", f"/api/v1/namespaces/{m.get('namespace', 'default')}/pods/{m.get('name')}")
    deadline = clock() + DRAIN_TIMEOUT
    while api.pods_on(node):
        if clock() > deadline:
            left = [f"{(p.get('metadata') or {}).get('namespace')}/{(p.get('metadata') or {}).get('name')}"
                    for p in api.pods_on(node)]
            raise Error(f"{node}: {len(left)} pod(s) still there after {DRAIN_TIMEOUT:.0f} s", details=left,
                        context=f"draining {node}", hint="see why with kubectl describe pod; the node stays "
                                                         "cordoned, run remove-node again once they are gone")
        sleep(1.0)
    return f"cordoned, {len(pods)} pod(s) deleted"


def delete_lease(inv: Inventory, pki: Pki, session: requests.Session, address: str) -> int:
    """Delete flannel's v2 lease(s) whose PublicIP is the host's address; returns how many."""
    prefix = inv.cluster.flannel_prefix.rstrip("/")
    removed = 0
    for m in inv.etcd_members:
        base = f"https://{m.address}:2379/v2/keys{prefix}/subnets"
        try:
            r = session.get(base, **client_tls(pki, "etcd-healthcheck"))
        except requests.RequestException:
            continue
        if r.status_code == 404:
            return 0
        for node in (r.json().get("node") or {}).get("nodes") or []:
            try:
                ip = json.loads(node.get("value") or "{}").get("PublicIP")
            except ValueError:
                continue
            if ip == address:
                session.delete(f"https://{m.address}:2379/v2/keys{node['key']}", **client_tls(pki, "etcd-healthcheck"))
                removed += 1
        return removed
    raise Error("no etcd member answered", context="deleting the removed host's flannel lease",
                hint="the lease expires by itself within 24 h; the other hosts keep a route to it until then")


def clean_host(conn, removal: Removal) -> str:
    """Stop and disable the units, then remove files, state and interfaces; one command on the host."""
    units = " ".join(removal.units)
    q = " ".join(shlex.quote(p) for p in removal.files + [f"{render_mod.UNIT_DIR}/{u}.service" for u in removal.units])
    wipe = " ".join(shlex.quote(p) for p in removal.wipe)
    unit_dirs = " ".join(shlex.quote(f"{render_mod.UNIT_DIR}/{u}.service.d") for u in removal.units)
    links = "; ".join(f"ip link del {ln} 2>/dev/null" for ln in LINKS)
    script = (f"systemctl disable --now {units} >/dev/null 2>&1; "
              f"for u in {units}; do systemctl is-active -q $u && {{ echo \"$u still active\" >&2; exit 3; }}; done; "
              f"rm -f {q}; rm -rf {unit_dirs} {wipe}; {links}; systemctl daemon-reload; true")
    r = conn.run(script, timeout=300, check=False)
    if r.rc != 0:
        raise Error(f"{removal.host.name}: stopping or cleaning up failed (exit status {r.rc})",
                    details=[ln for ln in (r.stderr or "").strip().splitlines()[-10:]],
                    context=f"removing {removal.host.name}", hint="fix what is named and run remove-node again")
    return f"{len(removal.units)} unit(s) stopped and disabled, {len(removal.files)} file(s) removed"


def forget(state: StateDir, name: str, address: str, known_hosts: Optional[Path]) -> None:
    hosts = state.hosts()
    hosts.pop(name, None)
    state.set_hosts(hosts)
    pend = state.pending
    for unit in list(pend.load().get(name, ())):
        pend.done(name, unit)
    if known_hosts is not None and known_hosts.is_file():
        subprocess.run(["ssh-keygen", "-R", address, "-f", str(known_hosts)], capture_output=True, check=False)


def remove(inv: Inventory, state: StateDir, pki: Pki, removals: Sequence[Removal], connector_for,
           session: requests.Session, out: Callable[[str], None], known_hosts: Optional[Path],
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict:
    api = Api(inv, pki, session)
    for rm in removals:
        h = rm.host
        out(f"{h.name}: drain: {drain(api, h.name, sleep, clock)}")
        conn = connector_for(inv, h)
        try:
            out(f"{h.name}: {clean_host(conn, rm)}")
        finally:
            conn.close()
        api.call("DELETE", f"/api/v1/nodes/{h.name}")
        out(f"{h.name}: Node deleted; {delete_lease(inv, pki, session, h.address)} flannel lease(s) deleted")
        forget(state, h.name, h.address, known_hosts)
        out(f"{h.name}: forgotten by the state directory")
        rm.done = ["drained", "cleaned", "node deleted", "forgotten"]
    out("next: `installer apply` takes the removed host(s) out of /etc/hosts on the remaining hosts")
    return {"removed": [r.host.name for r in removals],
            "hosts": {r.host.name: {"units": r.units, "files": len(r.files), "wiped": r.wipe} for r in removals}}
