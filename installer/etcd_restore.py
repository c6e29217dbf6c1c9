"""`installer etcd restore SNAPSHOT`: bring the cluster's etcd back from a snapshot (quorum lost, data corrupt).

The plan is printed first; then, in order:
  1. the snapshot is checked against its sidecar (sha256, size) when it has one (`installer etcd snapshot`'s)
  2. kube-apiserver is stopped on every master, etcd on every member
  3. on every member: the snapshot is copied over, the data directory moved aside (`<dir>.before-restore-<time>`,
     never deleted), and `etcdctl snapshot restore` writes a new one with the member's name and peer URL, the
     recorded members as the initial cluster and a new cluster token (a restored cluster is a new cluster)
  4. etcd is started on every member at once (a member waits for a quorum) and the health of all is awaited
  5. flannel's network config is written again (etcd keeps v2 keys outside v3 snapshots), flanneld restarted
     everywhere (each takes the subnet it had, from its subnet file), the apiservers started, /healthz through
     the VIP awaited
`installer check` afterwards shows the cluster as the snapshot had it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import requests

from contract.errors import Error
from installer import checks as checks_mod
from installer import render as render_mod
from installer.etcd_backup import OnMember, sidecar_of
from installer.hosts.connector import DEFAULT_PARALLEL, Connector, failures, run_on
from installer.inventory import Host, Inventory
from installer.pki import Pki

REMOTE_COPY = "/var/tmp/k8s-offline-restore.db"
HEALTH_TIMEOUT = 180.0
DOING = "restoring etcd from a snapshot"


@dataclass(frozen=True)
class MemberPlan:
    host: Host
    name: str
    data_dir: str
    peer_url: str


def _etcd_env(inv: Inventory, host: Host) -> Dict[str, str]:
    files = render_mod.render_host(inv, host, pki_files={})
    return render_mod.parse_env_file(files["/etc/etcd/etcd.conf"].content.decode())


def plan(inv: Inventory, snapshot: Path) -> List[MemberPlan]:
    if not snapshot.is_file():
        raise Error(f"{snapshot}: no such snapshot file", context=DOING,
                    hint="pass a file from <state>/backups (installer etcd snapshot writes them)", exit_code=2)
    out = []
    for m in inv.etcd_members:
        env = _etcd_env(inv, m)
        out.append(MemberPlan(m, env["ETCD_NAME"], env["ETCD_DATA_DIR"], env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]))
    return out


def plan_lines(inv: Inventory, snapshot: Path, members: List[MemberPlan]) -> List[str]:
    masters = ", ".join(m.name for m in inv.masters)
    lines = [f"restore etcd from {snapshot}:", f"  stop kube-apiserver on {masters}",
             f"  stop etcd on {', '.join(m.host.name for m in members)}"]
    lines += [f"  {m.host.name}: move {m.data_dir} aside, restore the snapshot into it as {m.name} ({m.peer_url})"
              for m in members]
    lines += ["  start etcd on every member, wait until all are healthy",
              "  write flannel's network config again, restart flanneld everywhere, start kube-apiserver"]
    return lines


def verify_snapshot(snapshot: Path) -> str:
    """sha256 of the file; checked against the sidecar when there is one."""
    h = hashlib.sha256()
    with open(snapshot, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    side = sidecar_of(snapshot)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except ValueError:
            raise Error(f"{side}: not valid JSON", context=DOING, hint="restore the sidecar or remove it") from None
        if meta.get("sha256") != digest:
            raise Error(f"{snapshot}: sha256 {digest[:16]}... is not the {str(meta.get('sha256'))[:16]}... its "
                        "sidecar recorded", context=DOING, hint="the file is damaged: take another snapshot file",
                        exit_code=2)
    return digest


def _all(hosts: List[Host], conns: Dict[str, Connector], fn: Callable[[Host, Connector], None],
         what: str, max_parallel: int) -> None:
    results = run_on([h.name for h in hosts], lambda n: fn(next(h for h in hosts if h.name == n), conns[n]),
                     max_parallel)
    bad = failures(results)
    if bad:
        raise Error(f"{what} failed on {', '.join(sorted(bad))}", context=DOING,
                    details=[f"{h}: {getattr(e, 'message', e)}" for h, e in sorted(bad.items())],
                    hint="fix what is named, then run the restore again (data directories already moved aside "
                         "stay where they are)")


def _run(c: Connector, host: Host, cmd, timeout: float = 120.0) -> str:
    r = c.run(cmd, timeout=timeout, check=False)
    if r.rc != 0:
        raise Error(f"{host.name}: {cmd if isinstance(cmd, str) else ' '.join(cmd)} exited {r.rc}",
                    details=(r.stderr or r.stdout or "").strip().splitlines()[-8:])
    return r.stdout


def _wait(probe: Callable[[], tuple], what: str, timeout: float, sleep, clock) -> str:
    deadline = clock() + timeout
    while True:
        ok, detail = probe()
        if ok:
            return detail
        if clock() > deadline:
            raise Error(f"{what} not reached within {timeout:.0f} s: {detail}", context=DOING,
                        hint="see journalctl -u etcd on the members; the data directories from before are kept "
                             "next to the restored ones (.before-restore-*)")
        sleep(2.0)


def restore(inv: Inventory, pki: Pki, snapshot: Path, members: List[MemberPlan], session: requests.Session,
            connector_for: Callable[[Inventory, Host], Connector], out: Callable[[str], None], *,
            on: OnMember = OnMember(), sleep=time.sleep, clock=time.monotonic,
            now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
            max_parallel: int = DEFAULT_PARALLEL) -> dict:
    """Stop, restore on every member, start again; each step on at most max_parallel hosts at once."""
    digest = verify_snapshot(snapshot)
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    token = f"{inv.cluster.name}-etcd-restore-{stamp}"
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    hosts = {h.name: h for h in list(inv.masters) + [m.host for m in members] + list(inv.nodes)}
    conns = {n: connector_for(inv, h) for n, h in hosts.items()}
    masters, etcd_hosts = list(inv.masters), [m.host for m in members]

    def each(on_hosts: List[Host], fn: Callable[[Host, Connector], None], what: str) -> None:
        _all(on_hosts, conns, fn, what, max_parallel)

    try:
        each(masters, lambda h, c: _run(c, h, "systemctl stop kube-apiserver"), "stopping kube-apiserver")
        out("kube-apiserver stopped on " + ", ".join(h.name for h in masters))
        each(etcd_hosts, lambda h, c: _run(c, h, "systemctl stop etcd"), "stopping etcd")
        out("etcd stopped on " + ", ".join(h.name for h in etcd_hosts))
        by_name = {m.host.name: m for m in members}

        def one(h: Host, c: Connector) -> None:
            m = by_name[h.name]
            c.put_file(REMOTE_COPY, snapshot, 0o600)
            got = _run(c, h, ["sha256sum", "--", REMOTE_COPY]).split()[:1]
            if got != [digest]:
                raise Error(f"{h.name}: the copied snapshot's sha256 differs")
            aside = f"{m.data_dir}.before-restore-{stamp}"
            _run(c, h, f"if [ -e {m.data_dir} ]; then mv {m.data_dir} {aside}; fi")
            _run(c, h, ["env", "ETCDCTL_API=3", on.etcdctl, "snapshot", "restore", REMOTE_COPY, "--name", m.name,
                        "--initial-cluster", initial, "--initial-cluster-token", token,
                        "--initial-advertise-peer-urls", m.peer_url, "--data-dir", m.data_dir], timeout=600)
            _run(c, h, ["rm", "-f", "--", REMOTE_COPY])

        each(etcd_hosts, one, "restoring the snapshot")
        out(f"snapshot restored on {', '.join(h.name for h in etcd_hosts)} (cluster token {token}); data "
            f"from before kept as <data dir>.before-restore-{stamp}")
        each(etcd_hosts, lambda h, c: _run(c, h, "systemctl --no-block start etcd"), "starting etcd")
        detail = _wait(lambda: checks_mod.all_ok(checks_mod.etcd_health(inv, pki, session)), "etcd health",
                       HEALTH_TIMEOUT, sleep, clock)
        out(f"etcd healthy: {detail}")
        checks_mod.put_flannel_config(inv, pki, session, render_mod.flannel_network_config(inv))
        flannel_hosts = [h for h in hosts.values() if h.has("master") or h.has("node")]
        each(flannel_hosts, lambda h, c: _run(c, h, "systemctl restart flanneld", timeout=180),
             "restarting flanneld")
        out("flannel network config written again; flanneld restarted on "
            + ", ".join(h.name for h in flannel_hosts))
        each(masters, lambda h, c: _run(c, h, "systemctl start kube-apiserver", timeout=180),
             "starting kube-apiserver")
        detail = _wait(lambda: checks_mod.apiserver_healthz(inv, pki, session, inv.cluster.vip, inv.cluster.lb_port),
                       "/healthz through the VIP", HEALTH_TIMEOUT, sleep, clock)
        out(f"kube-apiserver started; /healthz through the VIP: {detail}")
    finally:
        for c in conns.values():
            c.close()
    return {"snapshot": str(snapshot), "sha256": digest, "cluster_token": token,
            "members": [m.host.name for m in members], "moved_aside_suffix": f".before-restore-{stamp}"}
