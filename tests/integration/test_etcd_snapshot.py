"""`installer etcd snapshot` against a real 3-member etcd started from the rendered etcd.conf files.

The members live on 127.0.18.11-13 (test_rendered_etcd.py's cluster uses 127.0.10.x: both modules may run at
once). "On the member" is this machine: the LocalConnector runs etcdctl with the member's rendered credential
(its paths moved into the tmp tree, as the cluster's are), exactly the commands SSH would run on an etcd host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from installer import etcd_backup, inventory, pki, pki_material, render
from installer.hosts.local import LocalConnector
from tests.integration.test_rendered_etcd import logs, need, start_member, stop

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime.now(dt.timezone.utc)
INVENTORY = """
cluster: {name: snap-test, vip: 127.0.18.100, vip_prefix: 24, lb_port: 18443, apiserver_port: 16443, interface: lo,
          etcd_backups_keep: 2}
registry: {hostname: registry.lo.test, address: 127.0.18.20}
hosts:
  - {name: m1, address: 127.0.18.11, roles: [master, etcd, lb]}
  - {name: m2, address: 127.0.18.12, roles: [master, etcd, lb]}
  - {name: m3, address: 127.0.18.13, roles: [master, etcd, lb]}
  - {name: n1, address: 127.0.18.21, roles: [node]}
"""
DEADLINE = 20.0


class Site:
    def __init__(self, d: Path, inv, p: pki.Pki, tree: Path, procs) -> None:
        self.d, self.inv, self.pki, self.tree, self.procs = d, inv, p, tree, procs
        self.state = p.state_dir
        self.scratch = d / "member-tmp"
        self.scratch.mkdir()
        self.session = requests.Session()
        self.session.trust_env = False

    def on(self, member: str) -> etcd_backup.OnMember:
        """The rendered paths of the member's etcdctl credential, moved into its tmp tree."""
        root = self.tree / member
        return etcd_backup.OnMember(etcdctl=shutil.which("etcdctl"),
                                    cacert=str(root / render.PATHS["etcd_ca"].lstrip("/")),
                                    cert=str(root / render.PATHS["etcd_crt"].lstrip("/")),
                                    key=str(root / render.PATHS["etcd_key"].lstrip("/")),
                                    tmp_parent=str(self.scratch))

    def snapshot(self, clock=etcd_backup.utcnow):
        member = etcd_backup.healthy_member(self.inv, self.pki, self.session)
        assert member is not None, logs(self.d)
        return etcd_backup.snapshot_command(self.inv, self.state, self.session,
                                            lambda inv, host: LocalConnector(host.name), on=self.on(member.name),
                                            clock=clock)

    def etcdctl(self, *args):
        tls = [f"--cacert={self.pki.crt_path('etcd-ca')}", f"--cert={self.pki.crt_path('etcd-healthcheck')}",
               f"--key={self.pki.key_path('etcd-healthcheck')}"]
        endpoints = ",".join(f"https://{m.address}:2379" for m in self.inv.etcd_members if m.name != "m1"
                             or self.procs[0].poll() is None)
        r = subprocess.run(["etcdctl", f"--endpoints={endpoints}", *tls, *args], capture_output=True, text=True,
                           timeout=15, check=False, env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"})
        assert r.returncode == 0, r.stdout + r.stderr + logs(self.d)
        return r.stdout

    def put(self, key: str, value: str) -> int:
        """Write a key; the cluster revision it created."""
        return int(json.loads(self.etcdctl("put", key, value, "-w", "json"))["header"]["revision"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need("etcd", "etcdctl")
    d = tmp_path_factory.mktemp("etcd-snap")
    (d / "inventory.yaml").write_text(INVENTORY)
    inv = inventory.load(d / "inventory.yaml")
    p = pki.Pki(d / "state", clock=lambda: T0)
    p.ensure(inv)
    rendered = render.render_all(inv, pki_files={h.name: pki_material.material_for(p, inv, h) for h in inv.hosts})
    tree = d / "tree"
    render.write_tree(rendered, tree)
    procs = []
    try:
        for m in inv.etcd_members:
            procs.append(start_member(m, rendered, tree, d))
        s = Site(d, inv, p, tree, procs)
        deadline = time.monotonic() + DEADLINE
        while etcd_backup.healthy_member(inv, p, s.session) is None or not all(
                r.ok for r in etcd_backup.checks.etcd_health(inv, p, s.session)):
            assert time.monotonic() < deadline and all(x.poll() is None for x in procs), logs(d)
            time.sleep(0.3)
        yield s
    finally:
        stop(procs)


def test_snapshot_is_verified_named_and_described_by_its_sidecar(site):
    revision = max(site.put(f"/snap/k{i}", f"v{i}") for i in range(20))
    snap = site.snapshot()
    assert snap.member == "m1" and snap.address == "127.0.18.11"  # the first healthy member in inventory order
    assert snap.revision >= revision and snap.total_keys >= 20
    assert etcd_backup.NAME_RE.match(snap.path.name) and snap.path.name.endswith(f"-{snap.revision}.db")
    assert snap.path.parent == site.state / "backups"
    assert stat.S_IMODE(snap.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(snap.path.parent.stat().st_mode) == 0o700
    side = json.loads(snap.sidecar.read_text())
    assert stat.S_IMODE(snap.sidecar.stat().st_mode) == 0o600
    assert side["sha256"] == hashlib.sha256(snap.path.read_bytes()).hexdigest() == snap.sha256
    assert side["size"] == snap.path.stat().st_size and side["revision"] == snap.revision
    assert side["member"] == {"name": "m1", "address": "127.0.18.11"}
    assert sorted(m["name"] for m in side["members"]) == ["m1", "m2", "m3"]
    assert all(m["peer_urls"] and m["id"] for m in side["members"])
    dt.datetime.fromisoformat(side["taken_at"])
    # the stored file is a whole snapshot: etcdctl reads it here too, with the same revision
    r = subprocess.run(["etcdctl", "snapshot", "status", str(snap.path), "-w", "json"], capture_output=True,
                       text=True, env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"}, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["revision"] == snap.revision and json.loads(r.stdout)["hash"] == side["hash"]
    assert list(site.scratch.iterdir()) == []  # the member's temporary copy is gone


def test_retention_keeps_the_last_two_and_nothing_it_did_not_write(site):
    backups = site.state / "backups"
    for p in backups.iterdir():
        p.unlink()
    foreign = [backups / "etcd-notes.txt", backups / "etcd-20000101T000000Z-1.db.bak", backups / "mine.db"]
    for f in foreign:
        f.write_text("not a snapshot of the installer's")
    snaps = []
    for i in range(3):
        rev = site.put("/snap/retention", str(i))
        t = dt.datetime(2030, 1, 1, 12, 0, i, tzinfo=dt.timezone.utc)
        snaps.append(site.snapshot(clock=lambda t=t: t))
        assert snaps[-1].revision >= rev
        assert snaps[-1].path.name == f"etcd-20300101T1200{i:02d}Z-{snaps[-1].revision}.db"
    assert snaps[2].removed == (snaps[0].path.name, snaps[0].sidecar.name)
    left = sorted(p.name for p in backups.iterdir())
    assert left == sorted([f.name for f in foreign] + [s.path.name for s in snaps[1:]]
                          + [s.sidecar.name for s in snaps[1:]])


def cli(*args):
    return subprocess.run([sys.executable, "-m", "installer.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_cli_no_healthy_member_is_a_clear_error(site, tmp_path):
    """Nothing answers on 127.0.19.x: exit 1 naming every member, a hint, no traceback, nothing written."""
    (tmp_path / "inv.yaml").write_text(INVENTORY.replace("127.0.18.", "127.0.19."))
    state = tmp_path / "state"
    shutil.copytree(site.state / "pki", state / "pki")
    r = cli("etcd", "snapshot", "-i", tmp_path / "inv.yaml", "--state", state)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "error: no etcd member is healthy" in r.stderr and "hint:" in r.stderr
    assert all(f"{m} (127.0.19.1{i}" in r.stderr for i, m in ((1, "m1"), (2, "m2"), (3, "m3")))
    assert not (state / "backups").exists()
    r = cli("etcd", "snapshot", "-i", tmp_path / "inv.yaml", "--state", state, "--json")
    assert r.returncode == 1 and json.loads(r.stderr)["error"].startswith("no etcd member is healthy")


def test_cli_bad_inventory_or_no_pki_is_refused_before_the_state_dir_exists(tmp_path):
    (tmp_path / "bad.yaml").write_text(INVENTORY.replace("etcd_backups_keep: 2", "etcd_backups_keep: 0"))
    r = cli("etcd", "snapshot", "-i", tmp_path / "bad.yaml", "--state", tmp_path / "state")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cluster.etcd_backups_keep" in r.stderr
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    r = cli("etcd", "snapshot", "-i", tmp_path / "inv.yaml", "--state", tmp_path / "state")
    assert r.returncode == 1 and "no etcd-healthcheck certificate" in r.stderr and "Traceback" not in r.stderr
    assert "--state" in r.stderr and not (tmp_path / "state").exists()


def test_a_stopped_first_member_is_skipped(site):
    site.procs[0].terminate()
    site.procs[0].wait(timeout=10)
    rev = site.put("/snap/after-m1", "x")
    snap = site.snapshot()
    assert snap.member == "m2" and snap.revision >= rev
    assert json.loads(snap.sidecar.read_text())["member"]["name"] == "m2"
