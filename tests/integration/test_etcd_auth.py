"""etcd v3 authentication by certificate CN (installer/etcd_auth.py) against a real etcd from the rendered etcd.conf.

One member on 127.0.19.11 (the other etcd modules use 127.0.10.x and 127.0.18.x). "On the member" is this
machine: the LocalConnector runs the very scripts SSH would run on an etcd host, with the rendered paths moved
into the tmp tree. The users, the facts probes, the step, the check and a snapshot with authentication on are
all exercised with the real etcd and etcdctl.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from installer import etcd_auth, etcd_backup, etcd_users, facts, inventory, pki, pki_material, render
from installer.hosts.local import LocalConnector
from tests.integration.test_rendered_etcd import logs, need, start_member, stop

pytestmark = pytest.mark.integration
INVENTORY = """
cluster: {name: auth-test, vip: 127.0.19.100, vip_prefix: 24, lb_port: 19443, apiserver_port: 17443, interface: lo}
registry: {hostname: registry.lo.test, address: 127.0.19.20}
hosts:
  - {name: m1, address: 127.0.19.11, roles: [master, etcd, lb]}
  - {name: n1, address: 127.0.19.21, roles: [node]}
"""
T0 = dt.datetime.now(dt.timezone.utc)


class Site:
    def __init__(self, d: Path, inv, p: pki.Pki, tree: Path) -> None:
        self.d, self.inv, self.pki, self.tree = d, inv, p, tree
        self.m1 = inv.host("m1")
        root = tree / "m1"
        at = {k: str(root / render.PATHS[k].lstrip("/")) for k in ("etcd_ca", "etcd_crt", "etcd_key",
                                                                   "etcd_admin_crt", "etcd_admin_key")}
        self.on = etcd_backup.OnMember(etcdctl=shutil.which("etcdctl"), cacert=at["etcd_ca"], cert=at["etcd_crt"],
                                       key=at["etcd_key"], admin_cert=at["etcd_admin_crt"],
                                       admin_key=at["etcd_admin_key"], tmp_parent=str(d))
        self.conn = LocalConnector("m1")

    def state(self):
        f = facts.gather(self.conn, probes=etcd_auth.probes(self.m1, self.on))
        return etcd_auth.state(f), f

    def as_(self, cert: str, *args: str):
        """etcdctl with one of the state directory's etcd-CA certificates."""
        tls = [f"--cacert={self.pki.crt_path('etcd-ca')}", f"--cert={self.pki.crt_path(cert)}",
               f"--key={self.pki.key_path(cert)}"]
        return subprocess.run(["etcdctl", "--endpoints=https://127.0.19.11:2379", *tls, *args], capture_output=True,
                              text=True, timeout=20, check=False, env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"})

    def get_as(self, cert: str):
        return self.as_(cert, "get", "--prefix", "/registry/")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need("etcd", "etcdctl")
    d = tmp_path_factory.mktemp("etcd-auth")
    (d / "inventory.yaml").write_text(INVENTORY)
    inv = inventory.load(d / "inventory.yaml")
    p = pki.Pki(d / "state", clock=lambda: T0)
    p.ensure(inv)
    rendered = render.render_all(inv, pki_files={h.name: pki_material.material_for(p, inv, h) for h in inv.hosts})
    tree = d / "tree"
    render.write_tree(rendered, tree)
    procs = [start_member(inv.host("m1"), rendered, tree, d)]
    try:
        s = Site(d, inv, p, tree)
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 20
        while not all(r.ok for r in etcd_backup.checks.etcd_health(inv, p, session)):
            assert time.monotonic() < deadline and procs[0].poll() is None, logs(d)
            time.sleep(0.3)
        yield s
    finally:
        stop(procs)


def test_authentication_by_cn_lets_only_the_apiserver_and_etcdctl_in(site):
    # before: every etcd-CA certificate is a full v3 client, the facts say "off" and apply plans the step
    assert site.get_as("etcd-client-apiserver").returncode == 0
    assert site.get_as("etcd-client-flanneld").returncode == 0, "the defect the step fixes"
    on, f = site.state()
    assert on is False and f.probes == {etcd_auth.PROBE_MEMBER: 0, etcd_auth.PROBE_ADMIN: 0}
    phase = etcd_auth.phase(site.inv, {"m1": f, "n1": None})
    [step] = [s for w in phase.waves for s in w.steps]
    assert (step.host, step.kind) == ("m1", etcd_auth.STEP_KIND) and "off on m1" in step.reason
    bad = etcd_auth.check(site.inv, site.pki, lambda inv, h: site.conn, on=site.on)
    assert [(r.target, r.ok) for r in bad] == [("m1", False)] and "authentication is off" in bad[0].detail

    assert "users root, kube-apiserver-etcd-client, etcd-admin" in etcd_auth.enable(site.conn, site.m1, site.on)
    assert etcd_auth.enable(site.conn, site.m1, site.on)  # idempotent: a re-run after a failure completes it

    on, f = site.state()
    assert on is True and f.probes[etcd_auth.PROBE_MEMBER] != 0 and f.probes[etcd_auth.PROBE_ADMIN] == 0
    assert etcd_auth.phase(site.inv, {"m1": f}).waves == ()  # converged: nothing planned
    ok = etcd_auth.check(site.inv, site.pki, lambda inv, h: site.conn, on=site.on)
    assert [(r.target, r.ok) for r in ok] == [("m1", True)], ok
    assert site.get_as("etcd-client-apiserver").returncode == 0  # kube-apiserver's CN is a root user
    assert site.as_("etcd-client-apiserver", "put", "/registry/namespaces/default", "x").returncode == 0
    for cert in ("etcd-client-flanneld", "etcd-healthcheck", "etcd-m1"):  # nobody else reads anything
        r = site.get_as(cert)
        assert r.returncode != 0 and "permission denied" in (r.stderr + r.stdout).lower(), (cert, r.stderr)
    # the JSON gateway gives no way around it: a client certificate's CN is not an identity there
    url = "https://127.0.19.11:2379/v3/kv/range"
    r = requests.post(url, json={"key": "L3JlZ2lzdHJ5Lw==", "range_end": "L3JlZ2lzdHJ5MA=="}, timeout=10,
                      cert=(str(site.pki.crt_path("etcd-client-flanneld")),
                            str(site.pki.key_path("etcd-client-flanneld"))),
                      verify=str(site.pki.crt_path("etcd-ca")))
    assert r.status_code != 200, r.text
    # /health still answers for the control host's health-check certificate (no user needed)
    session = requests.Session()
    session.trust_env = False
    assert all(x.ok for x in etcd_backup.checks.etcd_health(site.inv, site.pki, session))

    # a snapshot with authentication on uses the etcd-admin certificate (the member's own is refused now)
    snap = etcd_backup.snapshot_command(site.inv, site.pki.state_dir, session, lambda inv, host: site.conn,
                                        on=site.on)
    assert snap.revision > 0 and snap.path.is_file()

    # someone turns it off: the check fails again, the facts say "off", apply plans the step again
    off = subprocess.run(["sh", "-c", etcd_auth.etcdctl(site.on, "127.0.19.11", site.on.admin_cert,
                                                        site.on.admin_key, "auth", "disable")],
                         capture_output=True, text=True, timeout=20, check=False)
    assert off.returncode == 0, off.stderr
    assert site.state()[0] is False
    assert not etcd_auth.check(site.inv, site.pki, lambda inv, h: site.conn, on=site.on)[0].ok
    etcd_auth.enable(site.conn, site.m1, site.on)
    assert site.state()[0] is True


def test_a_member_that_does_not_answer_cannot_tell(site, tmp_path):
    gone = etcd_backup.OnMember(etcdctl=site.on.etcdctl, cacert=site.on.cacert, cert=site.on.cert, key=site.on.key,
                                admin_cert=str(tmp_path / "missing.crt"), admin_key=str(tmp_path / "missing.key"))
    f = facts.gather(site.conn, probes=etcd_auth.probes(site.m1, gone))
    assert f.probes[etcd_auth.PROBE_ADMIN] == 127 and etcd_auth.state(f) is None
    # unknown everywhere: the step is planned (first apply, or members that lack the admin certificate)
    phase = etcd_auth.phase(site.inv, {"m1": f})
    assert [s.kind for w in phase.waves for s in w.steps] == [etcd_auth.STEP_KIND]
    assert etcd_users.ADMIN_CN == "etcd-admin"
