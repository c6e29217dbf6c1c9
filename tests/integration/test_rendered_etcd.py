"""A real 3-member etcd cluster started from the rendered etcd.conf files, with the PKI we issued.

Hosts live on 127.0.10.0/24 (all of 127/8 routes to lo, so no netns is needed). Only paths are
rewritten (into a tmp dir); every other ETCD_* value is used exactly as rendered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from installer import inventory, kubeconfig, pki, pki_material, render

pytestmark = pytest.mark.integration
T0 = dt.datetime.now(dt.timezone.utc)
LOOPBACK_INVENTORY = """
cluster: {name: lo-test, vip: 127.0.10.100, vip_prefix: 24, lb_port: 18443, apiserver_port: 16443, interface: lo}
registry: {hostname: registry.lo.test, address: 127.0.10.20}
hosts:
  - {name: m1, address: 127.0.10.11, roles: [master, etcd, lb]}
  - {name: m2, address: 127.0.10.12, roles: [master, etcd, lb]}
  - {name: m3, address: 127.0.10.13, roles: [master, etcd, lb]}
  - {name: n1, address: 127.0.10.21, roles: [node]}
"""
DEADLINE = 20.0


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def stop(procs):
    """Stop the processes this test started, by PID: TERM, then KILL after a short grace period.

    A leader stopped together with its peers tries to hand leadership over until it gives up; a test
    cluster need not wait for that.
    """
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def start_member(m, rendered, tree: Path, d: Path) -> subprocess.Popen:
    """The real etcd of member m from its rendered etcd.conf, paths in the tmp tree, log in d/<name>.log."""
    env = render.parse_env_file(rendered[m.name]["/etc/etcd/etcd.conf"].content.decode())
    env = localise(env, tree / m.name, d / "data" / m.name)
    with open(d / f"{m.name}.log", "wb") as log:
        return subprocess.Popen([shutil.which("etcd")], env={"PATH": os.environ["PATH"], **env}, stdout=log,
                                stderr=subprocess.STDOUT)


def localise(env: dict, host_root: Path, data_dir: Path) -> dict:
    """Point every path of a rendered EnvironmentFile into the tmp tree; leave all other values alone."""
    out = {}
    for k, v in env.items():
        if k == "ETCD_DATA_DIR":
            out[k] = str(data_dir)
        elif v.startswith("/"):
            out[k] = str(host_root / v.lstrip("/"))
        else:
            out[k] = v
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Start m1..m3 in parallel from their rendered etcd.conf; yield (inventory, pki, tree, endpoints)."""
    need("etcd", "etcdctl")
    d = tmp_path_factory.mktemp("etcd")
    (d / "inventory.yaml").write_text(LOOPBACK_INVENTORY)
    inv = inventory.load(d / "inventory.yaml")
    p = pki.Pki(d / "state", clock=lambda: T0)
    p.ensure(inv)
    rendered = render.render_all(inv, pki_files={h.name: pki_material.material_for(p, inv, h) for h in inv.hosts})
    tree = d / "tree"
    render.write_tree(rendered, tree)
    procs = []
    try:
        for m in inv.etcd_members:
            env = render.parse_env_file(rendered[m.name]["/etc/etcd/etcd.conf"].content.decode())
            env = localise(env, tree / m.name, d / "data" / m.name)
            with open(d / f"{m.name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
                procs.append(subprocess.Popen([shutil.which("etcd")], env={"PATH": os.environ["PATH"], **env},
                                              stdout=log, stderr=subprocess.STDOUT))
        endpoints = ",".join(f"https://{m.address}:2379" for m in inv.etcd_members)
        yield inv, p, tree, endpoints, d, procs
    finally:
        stop(procs)


def etcdctl(p: pki.Pki, endpoints: str, *args, api="3"):
    if api == "3":
        tls = [f"--cacert={p.crt_path('etcd-ca')}", f"--cert={p.crt_path('etcd-healthcheck')}",
               f"--key={p.key_path('etcd-healthcheck')}"]
    else:
        tls = [f"--ca-file={p.crt_path('etcd-ca')}", f"--cert-file={p.crt_path('etcd-healthcheck')}",
               f"--key-file={p.key_path('etcd-healthcheck')}"]
    return subprocess.run(["etcdctl", f"--endpoints={endpoints}", *tls, *args], capture_output=True, text=True,
                          timeout=15, check=False, env={"PATH": os.environ["PATH"], "ETCDCTL_API": api})


def logs(d: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(d.glob("*.log")))


def test_all_members_healthy_over_tls(cluster):
    _, p, _, endpoints, d, procs = cluster
    deadline = time.monotonic() + DEADLINE
    while True:
        r = etcdctl(p, endpoints, "endpoint", "health")
        if r.returncode == 0 or time.monotonic() > deadline or any(x.poll() is not None for x in procs):
            break
        time.sleep(0.3)
    assert r.returncode == 0, r.stdout + r.stderr + logs(d)
    assert r.stdout.count("is healthy") + r.stderr.count("is healthy") == 3
    members = etcdctl(p, endpoints, "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["m1", "m2", "m3"]


def test_flannel_network_over_the_v2_api_with_flannels_cert(cluster):
    inv, p, tree, endpoints, d, _ = cluster
    key = f"{inv.cluster.flannel_prefix}/config"
    value = render.flannel_network_config(inv)
    r = etcdctl(p, endpoints, "set", key, value, api="2")
    assert r.returncode == 0, r.stdout + r.stderr + logs(d)
    # read it the way flanneld on n1 would: its rendered client cert, another member than the writer's
    n1 = tree / "n1"
    ctx = ssl.create_default_context(cafile=str(n1 / render.PATHS["etcd_client_ca"].lstrip("/")))
    ctx.load_cert_chain(str(n1 / render.PATHS["flanneld_etcd_crt"].lstrip("/")),
                        str(n1 / render.PATHS["flanneld_etcd_key"].lstrip("/")))
    url = f"https://127.0.10.13:2379/v2/keys{key}"
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        node = json.load(resp)["node"]
    assert json.loads(node["value"]) == {"Network": "172.30.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}


def test_a_client_without_certificate_is_refused(cluster):
    p = cluster[1]
    ctx = ssl.create_default_context(cafile=str(p.crt_path("etcd-ca")))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen("https://127.0.10.11:2379/v2/keys/", context=ctx, timeout=5).read()


@pytest.mark.parametrize("name", ["kubelet-n1", "kube-proxy", "admin", "controller-manager"])
def test_node_and_csr_credentials_are_no_etcd_clients(cluster, name):
    """The real etcd refuses, in the TLS handshake, every certificate the site CA signed (the CA whose key the
    masters hold for the CSR signer): kubelet's and kube-proxy's from the nodes, admin's, the components'."""
    p = cluster[1]
    ctx = ssl.create_default_context(cafile=str(p.crt_path("etcd-ca")))
    ctx.load_cert_chain(str(p.crt_path(name)), str(p.key_path(name)))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen("https://127.0.10.11:2379/v2/keys/", context=ctx, timeout=5).read()


def test_the_check_sees_etcd_refuse_them_and_would_see_it_accept_them(cluster):
    import requests

    from installer import etcd_access

    inv, p = cluster[0], cluster[1]
    [r] = etcd_access.refused(inv, p, requests.Session())
    assert r.ok and "refuses all" in r.detail, r
    # a PKI whose etcd trusted the site CA (as before the etcd CA): the check fails naming the credentials
    legacy = pki.Pki(cluster[4] / "legacy-view")
    legacy.dir.mkdir(parents=True)
    for f in p.dir.iterdir():
        if f.name not in ("etcd-ca.crt", "etcd-ca.key"):
            (legacy.dir / f.name).symlink_to(f)
    (legacy.dir / "ca.crt").unlink()
    (legacy.dir / "ca.crt").write_bytes(p.crt_path("ca").read_bytes() + p.crt_path("etcd-ca").read_bytes())
    for spec in legacy.specs(inv):  # pretend the site-CA certs are etcd clients: swap in an etcd-CA one
        if spec.name == "kube-proxy":
            (legacy.dir / "kube-proxy.crt").unlink()
            (legacy.dir / "kube-proxy.key").unlink()
            (legacy.dir / "kube-proxy.crt").symlink_to(p.crt_path("etcd-client-flanneld"))
            (legacy.dir / "kube-proxy.key").symlink_to(p.key_path("etcd-client-flanneld"))
    [r] = etcd_access.refused(inv, legacy, requests.Session())
    assert not r.ok and "kube-proxy (HTTP 200)" in r.detail and "predates" in r.detail, r


# ------------------------------------------------------------------ stand-in apiservers behind haproxy

def standin_executable(name: str) -> bytes:
    """The stand-in binary from tests/fixtures/standins (written by another part of the project)."""
    try:
        from tests.fixtures.standins import executable
    except ImportError:
        pytest.skip("tests/fixtures/standins has no executable() yet")
    return executable(name)


def localise_args(args, host_root: Path):
    """Rewrite absolute paths in --flag=/path arguments into the host's tmp tree."""
    out = []
    for a in args:
        name, sep, value = a.partition("=")
        out.append(f"{name}={host_root / value.lstrip('/')}" if sep and value.startswith("/") else a)
    return out


def test_standin_apiservers_answer_healthz_through_haproxy(cluster, tmp_path):
    need("haproxy")
    inv, p, tree, endpoints, d, _ = cluster
    exe = tmp_path / "kube-apiserver"
    exe.write_bytes(standin_executable("kube-apiserver"))
    exe.chmod(0o755)
    assert etcdctl(p, endpoints, "endpoint", "health").returncode == 0, logs(d)
    procs = []
    try:
        for m in inv.masters:
            root = tree / m.name
            common = render.parse_env_file((root / "etc/kubernetes/config").read_text())
            env = render.parse_env_file((root / "etc/kubernetes/apiserver").read_text())
            args = (common["KUBE_LOGTOSTDERR"].split() + common["KUBE_LOG_LEVEL"].split()
                    + localise_args(env["KUBE_APISERVER_ARGS"].split(), root))
            with open(tmp_path / f"apiserver-{m.name}.log", "wb") as log:
                procs.append(subprocess.Popen([str(exe), *args], stdout=log, stderr=subprocess.STDOUT))
        cfg = tree / "m1" / "etc/haproxy/haproxy.cfg"
        with open(tmp_path / "haproxy.log", "wb") as log:
            procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT))
        admin = kubeconfig.parse((tree / "m1" / "etc/kubernetes/admin.kubeconfig").read_bytes())
        for k in ("ca_pem", "cert_pem", "key_pem"):
            (tmp_path / k).write_bytes(admin[k])
            (tmp_path / k).chmod(0o600)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca_pem"))
        ctx.load_cert_chain(str(tmp_path / "cert_pem"), str(tmp_path / "key_pem"))
        url = f"{admin['server']}/healthz"
        assert admin["server"] == "https://127.0.10.100:18443"
        deadline, last = time.monotonic() + DEADLINE, None
        while time.monotonic() < deadline and all(x.poll() is None for x in procs):
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
                    last = (resp.status, resp.read().decode())
                if last == (200, "ok"):
                    break
            except (OSError, urllib.error.URLError) as e:
                last = e
            time.sleep(0.3)
        out = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}" for f in tmp_path.glob("*.log"))
        assert last == (200, "ok"), f"{last}\n{out}"
    finally:
        stop(procs)
