"""`installer apply` end to end on booted hosts: 3 masters (etcd + haproxy + keepalived) + 1 node, then a 5th.

One testbed and one bundle for the module; the tests build on each other in file order (fresh apply with
an SSH cut and resume, converged re-apply, a changed file, VIP failover, leader failover, add-node).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import json
import os
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from installer import checks as checks_mod
from installer import inventory as inventory_mod
from installer.apply import default_session
from installer.pki import Pki
from installer.render import PATHS
from tests.e2e import cluster
from tests.e2e.outage import Sampler, longest_outage
from tests.e2e.test_docker_host import make_site_ca

pytestmark = pytest.mark.e2e
MASTERS = (1, 2, 3)


class Site:
    """The module's testbed, bundle, registry, inventories and state dir, and the CLI arguments for them."""

    def __init__(self, tb, bundle: cluster.BuiltBundle, work: Path, ca: Path) -> None:
        self.tb, self.bundle, self.work, self.ca = tb, bundle, work, ca
        self.state = work / "state"
        # 3 masters + 2 nodes (h4, h5); h6 joins with add-node (a testbed of 6 hosts)
        self.inv4 = cluster.write_inventory(tb, work / "inventory.yaml", 5, ca_file=ca)
        self.inv5 = cluster.write_inventory(tb, work / "inventory-6.yaml", 6, ca_file=ca) if tb.n_hosts >= 6 else None
        self.known_hosts = work / "known_hosts"

    def args(self, inv: Path = None, bundle: cluster.BuiltBundle = None) -> list:
        b = bundle or self.bundle
        return ["--bundle", str(b.path), "--pub", str(b.pub), "-i", str(inv or self.inv4),
                "--state", str(self.state), "--known-hosts", str(self.known_hosts)]

    def apply(self, inv: Path = None) -> cluster.Run:
        return cluster.installer("apply", *self.args(inv))

    def check(self, inv: Path = None) -> cluster.Run:
        return cluster.installer("check", "-i", str(inv or self.inv4), "--state", str(self.state), "--json",
                                 "--known-hosts", str(self.known_hosts))

    def inventory(self, inv: Path = None):
        return inventory_mod.load(inv or self.inv4)

    def pki(self) -> Pki:
        return Pki(self.state)

    def journal(self) -> list:
        p = self.state / "journal.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


@contextlib.contextmanager
def open_site(testbed_factory, tmp_path_factory, n_hosts: int = 6, name: str = "apply") -> Iterator[Site]:
    """A booted testbed of n_hosts (5: the 3 masters and 2 nodes alone), the 1.10.3 bundle, the site registry."""
    t0 = time.monotonic()
    tb = testbed_factory.create(n_hosts)
    work = tmp_path_factory.mktemp(name)
    bundle = cluster.build_bundle(work / "build")
    cluster.register_base_rpms(tb, range(1, n_hosts + 1), bundle.base_rpms)
    tls = make_site_ca(work / "registry-ca", tb.control_address)  # the site's existing registry and its CA
    reg = cluster.Registry(work / "registry", tb.control_address, tls_cert=tls["cert"], tls_key=tls["key"]).start()
    print(f"\nsetup: testbed + bundle ({bundle.seconds:.1f} s) + registry in {time.monotonic() - t0:.1f} s")
    try:
        yield Site(tb, bundle, work, tls["ca"])
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def site(testbed_factory, tmp_path_factory):
    with open_site(testbed_factory, tmp_path_factory) as s:
        yield s


def _fail(run: cluster.Run) -> str:
    return f"rc={run.rc}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-6000:]}"


def test_fresh_apply_with_ssh_cut_mid_apply_then_resume(site):
    """The node loses SSH while the masters come up: apply names it; after repair a re-run converges."""
    tb = site.tb
    node = tb.host(4)
    log = site.work / "apply-1.log"
    t0 = time.monotonic()
    proc = cluster.start_installer("apply", *site.args(), log=log)
    cut = False
    try:
        # cut once the lb phase has started: the node is only touched in the later nodes phase
        cluster.wait_for(lambda: proc.poll() is not None or any(e.get("phase") == "lb" for e in site.journal()),
                         timeout=240, interval=0.2, what="the lb phase")
        assert proc.poll() is None, f"apply ended before the cut:\n{log.read_text()[-4000:]}"
        r = cluster.netns_exec(node.machine, "iptables -I INPUT -p tcp --dport 22 -j DROP")
        assert r.returncode == 0, r.stderr
        cut = True
        rc = proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if cut:
            cluster.netns_exec(node.machine, "iptables -D INPUT -p tcp --dport 22 -j DROP")
    first = time.monotonic() - t0
    out = log.read_text()
    assert rc != 0, out[-4000:]
    err = out[out.rfind("error:"):]
    assert "h4" in err.splitlines()[0], err
    assert "hint:" in err
    print(f"\nfirst apply failed as intended after {first:.1f} s:\n{err[:600]}")
    pending = json.loads((site.state / "pending.json").read_text())
    assert "h4" in pending or any(e.get("host") == "h4" and e.get("status") == "failed" for e in site.journal())

    run = site.apply()
    assert run.rc == 0, _fail(run)
    print(f"resumed apply converged in {run.seconds:.1f} s")
    assert json.loads((site.state / "pending.json").read_text()) == {}
    report = json.loads((site.state / "report.json").read_text())
    assert report["checks"]["ok"] and "h4" in report["changed"]
    assert report["bundle"]["signer_fingerprint"].startswith("SHA256:") and report["bundle"]["reused_unpacked"]
    assert report["seed"] is None or report["seed"]["totals"]["images"] == 7  # seeded by the first run
    # the bundle's trust, from the signed manifest's typed section: every RPM signature-checked, nothing unchecked
    trust = {f"{t['kind']}/{t['name']}": t["check"] for t in report["trust"]["sources"]}
    assert trust["binary/kubernetes-server"] == "upstream-digest" and trust["rpm/haproxy"] == "gpg-signed"
    assert report["trust"]["warnings"] == [] and report["trust"]["signed_rpms"] > 0
    assert "WARNING" not in (site.state / "report.txt").read_text()

    check = site.check()
    assert check.rc == 0, _fail(check)
    results = json.loads(check.stdout)["results"]
    names = {r["name"] for r in results}
    assert {"etcd health", "healthz via VIP", "componentstatus", "leader kube-controller-manager",
            "leader kube-scheduler", "nodes Ready"} <= names
    assert sum(r["name"] == "etcd health" and r["ok"] for r in results) == 3


def test_kubelet_pulls_pause_from_the_seeded_registry(site):
    """The rendered pod-infra image is the seeded name, and the registry serves it with the bundle's digest."""
    inv = site.inventory()
    want = f"{inv.registry.endpoint}/{inv.registry.project}/pause-amd64:3.1"
    kubelet = site.tb.ssh(4, "cat /etc/kubernetes/kubelet").stdout
    assert f"--pod-infra-container-image={want}" in kubelet, kubelet
    addons = site.tb.ssh(1, "cat /etc/kubernetes/addons/kube-dns.yaml").stdout
    assert f"image: {inv.registry.endpoint}/{inv.registry.project}/k8s-dns-kube-dns-amd64:1.14.10" in addons
    ca = site.tb.merged(4) / f"etc/docker/certs.d/{inv.registry.endpoint}/ca.crt"
    assert ca.read_bytes() == site.ca.read_bytes()  # the site's registry CA, and no insecure-registries
    r = site.tb.ssh(4, f"docker pull {want} && docker image inspect -f '{{{{index .RepoDigests 0}}}}' {want}",
                    check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    digest = r.stdout.strip().splitlines()[-1].split("@")[-1]
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"--cert-dir={ca.parent}",
                          f"docker://{inv.registry.address}:{inv.registry.port}/{inv.registry.project}/pause-amd64:3.1"],
                         capture_output=True)
    assert raw.returncode == 0, raw.stderr
    assert digest == "sha256:" + hashlib.sha256(raw.stdout).hexdigest()  # what the node got is what was seeded


# ------------------------------------------------------------------ the data plane (pods, pulls, addons)

def _results(run: cluster.Run) -> list:
    return json.loads(run.stdout)["results"]


def test_check_proves_the_pod_network_and_the_pulls(site):
    """installer check: a probe on every node through its own CNI config, reached from every host and pod;
    flanneld on every master and node; every node's docker pulls pause from the seeded registry (site CA only)."""
    run = site.check()
    assert run.rc == 0, _fail(run)
    res = _results(run)
    nodes = [h.name for h in site.inventory().nodes]
    probes = {r["target"]: r for r in res if r["name"] == "pod network probe"}
    assert sorted(probes) == sorted(nodes) and all(r["ok"] for r in probes.values()), probes
    pod_subnet = ipaddress.ip_network(site.inventory().cluster.pod_cidr)
    assert all(ipaddress.ip_address(r["detail"].split()[0]) in pod_subnet for r in probes.values())
    assert [r["ok"] for r in res if r["name"] == "pod network"] == [True]
    assert sorted(r["target"] for r in res if r["name"] == "flanneld" and r["ok"]) == \
        sorted(h.name for h in site.inventory().hosts)
    pulls = {r["target"]: r for r in res if r["name"] == "image pull"}
    assert sorted(pulls) == sorted(nodes) and all(r["ok"] for r in pulls.values()), pulls
    daemon = json.loads(site.tb.ssh(4, "cat /etc/docker/daemon.json").stdout)
    assert "insecure-registries" not in daemon  # trust comes from certs.d/<registry>/ca.crt alone
    routes = site.tb.ssh(4, "ip -4 route show").stdout
    subnet = site.tb.ssh(4, ". /run/flannel/subnet.env && echo $FLANNEL_SUBNET").stdout.strip()
    net = str(ipaddress.ip_interface(subnet).network)
    assert sum(line.startswith(net + " ") for line in routes.splitlines()) == 1, routes  # one way only
    assert site.tb.ssh(4, "ls /var/run/netns 2>/dev/null | grep -c k8s-offline-probe || true").stdout.strip() == "0"


KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.kubeconfig"


def _kubectl(site, args: str, n: int = 1, check: bool = True):
    return site.tb.ssh(n, f"{KUBECTL} {args}", check=check, timeout=60)


def _pod(site, name: str) -> dict:
    r = _kubectl(site, f"get pod {name} -n default -o json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _sandbox_pid(site, n: int, pod: str) -> str:
    """The pod's sandbox process, "" when there is none: a sandbox kubelet removes between `docker ps` and
    `docker inspect` is gone (inspect says "No such object"), which is what the removal wait waits for."""
    r = site.tb.ssh(n, "docker ps -q --filter label=io.kubernetes.docker.type=podsandbox "
                       f"--filter label=io.kubernetes.pod.name={pod} | head -1 | "
                       "xargs -r docker inspect -f '{{.State.Pid}}'", check=False)
    if r.returncode != 0 and "No such object" not in r.stderr:
        raise AssertionError(f"h{n}: finding the sandbox of {pod} failed (rc {r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip() if r.returncode == 0 else ""


def test_pods_on_two_nodes_reach_each_other_and_the_masters_reach_them(site):
    """The seeds' acceptance test: kubelet runs a pod on h4 and one on h5 through their real dockerd and the
    rendered CNI config; the pods ping each other across the vxlan overlay, every master pings both, and
    deleting a pod removes its sandbox."""
    inv = site.inventory()
    image = f"{inv.registry.endpoint}/{inv.registry.project}/pause-amd64:3.1"
    pods = {"web-h4": "h4", "web-h5": "h5"}
    manifest = "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n"
        f"spec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: {image}\n"
        for name, node in pods.items())
    (site.tb.merged(1) / "root/pods.yaml").write_text(manifest)
    r = _kubectl(site, "apply -f /root/pods.yaml", check=False)
    assert r.returncode == 0, r.stderr
    try:
        ips = {}
        for name in pods:
            pod = cluster.wait_for(lambda name=name: (lambda p: p if p.get("status", {}).get("phase") == "Running"
                                                       and p["status"].get("podIP") else None)(_pod(site, name)),
                                   120, 1.0, what=f"pod {name} Running with an address")
            ips[name] = pod["status"]["podIP"]
        pod_net = ipaddress.ip_network(inv.cluster.pod_cidr)
        assert all(ipaddress.ip_address(ip) in pod_net for ip in ips.values()), ips
        for name, node in pods.items():  # the pod's address is in its node's flannel subnet
            subnet = site.tb.ssh(int(node[1:]), ". /run/flannel/subnet.env && echo $FLANNEL_SUBNET").stdout.strip()
            assert ipaddress.ip_address(ips[name]) in ipaddress.ip_interface(subnet).network, (name, subnet)
        # pod -> pod across nodes, from inside each sandbox's network namespace
        for name, other in (("web-h4", "web-h5"), ("web-h5", "web-h4")):
            n = int(pods[name][1:])
            pid = _sandbox_pid(site, n, name)
            assert pid.isdigit() and pid != "0", pid
            p = site.tb.ssh(n, f"nsenter -t {pid} -n ping -c 2 -W 3 {ips[other]}", check=False, timeout=30)
            assert p.returncode == 0, f"{name} -> {other} ({ips[other]}): {p.stdout}{p.stderr}"
        for m in MASTERS:  # the masters (flanneld, no kubelet) reach every pod IP
            for name, ip in ips.items():
                p = site.tb.ssh(m, f"ping -c 1 -W 3 {ip}", check=False, timeout=30)
                assert p.returncode == 0, f"h{m} -> {name} ({ip}): {p.stdout}{p.stderr}"
    finally:
        r = _kubectl(site, "delete -f /root/pods.yaml --ignore-not-found", check=False)
    assert r.returncode == 0, r.stderr
    for name, node in pods.items():
        cluster.wait_for(lambda n=int(node[1:]), name=name: _sandbox_pid(site, n, name) == "", 60, 1.0,
                         what=f"the sandbox of {name} to be removed")


def test_a_stopped_flanneld_fails_the_check_naming_its_node(site):
    site.tb.ssh(5, "systemctl stop flanneld")
    try:
        run = site.check()
        assert run.rc != 0, _fail(run)
        bad = {(r["name"], r["target"]) for r in _results(run) if not r["ok"]}
        assert ("flanneld", "h5") in bad, bad
        assert all(t == "h5" for n, t in bad if n == "flanneld"), bad
        assert "Traceback" not in run.stderr
    finally:
        site.tb.ssh(5, "systemctl start flanneld")
    run = cluster.wait_for(lambda: (lambda r: r if r.rc == 0 else None)(site.check()), 60, 3.0,
                           what="the check to be green again")
    assert run.rc == 0


def test_secrets_are_encrypted_at_rest_in_etcd(site):
    """The dashboard's Secret (applied by apply) is stored aescbc-encrypted with the site key; the API serves it."""
    r = _kubectl(site, "get secret kubernetes-dashboard-certs -n kube-system -o json")
    assert json.loads(r.stdout)["metadata"]["name"] == "kubernetes-dashboard-certs"
    tls = (f"--endpoints https://{site.tb.host(1).address}:2379 --cacert /etc/etcd/pki/ca.crt "
           "--cert /etc/etcd/pki/admin.crt --key /etc/etcd/pki/admin.key")
    get = f"ETCDCTL_API=3 /usr/local/bin/etcdctl {tls} get --print-value-only"
    r = site.tb.ssh(1, f"{get} /registry/secrets/kube-system/kubernetes-dashboard-certs > /tmp/v && head -c 32 /tmp/v",
                    timeout=30, check=False)
    assert r.returncode == 0 and r.stdout.startswith("k8s:enc:aescbc:v1:k8s-offline-1:"), (r.stdout, r.stderr)
    r = site.tb.ssh(1, f"{get} /registry/serviceaccounts/kube-system/kube-dns > /tmp/v && head -c 1 /tmp/v",
                    timeout=30, check=False)
    assert r.returncode == 0 and r.stdout == "{", (r.stdout, r.stderr)  # other kinds stay plain JSON


def test_no_credential_on_a_node_reads_the_kubernetes_data_in_etcd(site):
    """etcd v3 authentication is on: flanneld's certificate (the etcd credential every node holds) reads nothing
    through v3 (gRPC, by CN) nor through the JSON gateway, while the apiserver (by its CN) works; flannel's own
    v2 prefix still works for it. Turning authentication off fails the check; the next apply turns it back on."""
    ep = f"https://{site.tb.host(1).address}:2379"
    fl = ("--cacert /etc/kubernetes/pki/etcd-ca.crt --cert /etc/kubernetes/pki/flanneld-etcd-client.crt "
          "--key /etc/kubernetes/pki/flanneld-etcd-client.key")
    # the very files of node h4, used from h1 (which has etcdctl): the same bytes as on every node
    for f in ("etcd-ca.crt", "flanneld-etcd-client.crt", "flanneld-etcd-client.key"):
        assert site.tb.ssh(4, f"sha256sum < /etc/kubernetes/pki/{f}").stdout == \
            site.tb.ssh(1, f"sha256sum < /etc/kubernetes/pki/{f}").stdout
    r = site.tb.ssh(1, f"ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints {ep} {fl} get --prefix --keys-only "
                       "/registry/", timeout=30, check=False)
    assert r.returncode != 0 and "permission denied" in r.stderr.lower(), (r.stdout, r.stderr)
    r = site.tb.ssh(1, f"ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints {ep} {fl} put /registry/x y",
                    timeout=30, check=False)
    assert r.returncode != 0, (r.stdout, r.stderr)
    curl = f"curl -s -o /dev/null -w '%{{http_code}}' {fl}"
    r = site.tb.ssh(4, f"{curl} {ep}/v3/kv/range -d '{{\"key\":\"L3JlZ2lzdHJ5Lw==\",\"range_end\":"
                       f"\"L3JlZ2lzdHJ5MA==\"}}'", timeout=30, check=False)
    assert r.stdout.strip() not in ("200", ""), (r.stdout, r.stderr)  # the gateway refuses it too
    prefix = site.inventory().cluster.flannel_prefix
    r = site.tb.ssh(4, f"curl -s -o /dev/null -w '%{{http_code}}' {fl} {ep}/v2/keys{prefix}/config", timeout=30,
                    check=False)
    assert r.stdout.strip() == "200", (r.stdout, r.stderr)  # flannel keeps its own v2 prefix
    _kubectl(site, "get namespace default -o name")  # the apiserver reads etcd by its CN
    run = site.check()
    assert run.rc == 0, _fail(run)
    assert ("etcd v3 authentication", "h1", True) in {(r["name"], r["target"], r["ok"]) for r in _results(run)}
    admin = (f"ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints {ep} --cacert /etc/etcd/pki/ca.crt "
             "--cert /etc/etcd/pki/admin.crt --key /etc/etcd/pki/admin.key")
    site.tb.ssh(1, f"{admin} auth disable", timeout=30)
    try:
        run = site.check()
        assert run.rc != 0 and ("etcd v3 authentication", "h1", False) in {
            (r["name"], r["target"], r["ok"]) for r in _results(run)}, _fail(run)
        plan = cluster.installer("plan", *site.args())
        assert "etcd v3 authentication: off on h1" in plan.stdout, _fail(plan)
    finally:
        run = site.apply()
    assert run.rc == 0, _fail(run)
    r = site.tb.ssh(1, f"ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints {ep} {fl} get --prefix --keys-only "
                       "/registry/", timeout=30, check=False)
    assert r.returncode != 0, (r.stdout, r.stderr)


def test_addons_are_in_the_apiserver_and_stay_pending_until_applied(site):
    """The addon objects exist after apply; an apply whose kubectl apply cannot reach the apiserver (after the
    manifest was written) fails naming the master, keeps the addons pending, and the next apply applies them."""
    r = _kubectl(site, "get deployment kube-dns -n kube-system -o json")
    assert json.loads(r.stdout)["metadata"]["name"] == "kube-dns"
    r = _kubectl(site, "get clusterrolebinding metrics-server:system:auth-delegator -o name", check=False)
    assert r.returncode == 0, r.stderr
    inv = site.inventory()
    vip, port = inv.cluster.vip, inv.cluster.lb_port
    site.tb.ssh(1, f"{KUBECTL} delete -f /etc/kubernetes/addons/kube-dns.yaml && "
                   "rm /etc/kubernetes/addons/kube-dns.yaml")
    block = f"OUTPUT -p tcp -d {vip} --dport {port} -j REJECT"
    site.tb.ssh(1, f"iptables -I {block}")
    try:
        run = site.apply()
        assert run.rc == 1, _fail(run)
        err = run.stderr[run.stderr.rfind("error:"):]
        assert "h1" in err.splitlines()[0] and "kubectl" in err, err
        assert "Traceback" not in run.stderr
        pending = json.loads((site.state / "pending.json").read_text())
        assert "addons" in pending.get("h1", []), pending
        assert site.tb.ssh(1, "test -f /etc/kubernetes/addons/kube-dns.yaml", check=False).returncode == 0
    finally:
        site.tb.ssh(1, f"iptables -D {block}")
    plan = cluster.installer("plan", *site.args(), "--json")
    assert plan.rc == 0, _fail(plan)
    steps = [(s["host"], s["kind"]) for p in json.loads(plan.stdout)["phases"] for w in p["waves"] for s in w["steps"]]
    assert steps == [("h1", "kubectl-apply")], steps
    run = site.apply()
    assert run.rc == 0, _fail(run)
    assert json.loads((site.state / "pending.json").read_text()) == {}
    assert _kubectl(site, "get deployment kube-dns -n kube-system -o name", check=False).returncode == 0


# ------------------------------------------------------------------ hardening: quorum-safe etcd, units that heal

def test_stopped_member_and_a_change_for_every_member_never_loses_quorum(site):
    """etcd stopped on h3 and every member's config drifted: one apply starts h3 first, restarts the others
    one at a time only while every other member is healthy (a continuous /health probe never sees fewer than
    2 of 3 healthy) and converges."""

    inv, pki, session = site.inventory(), site.pki(), default_session()
    site.tb.ssh(3, "systemctl stop etcd")
    for n in MASTERS:
        site.tb.ssh(n, "echo '# drift' >> /etc/etcd/etcd.conf")
    start = len(site.journal())
    def healthy() -> int:
        return sum(r.ok for r in checks_mod.etcd_health(inv, pki, session))

    with Sampler(healthy, up=lambda c: c == 3) as sampler:
        run = site.apply()
    assert run.rc == 0, _fail(run)
    counts = [c for _, c in sampler.samples]
    assert counts and min(counts) >= 2, counts  # quorum (2 of 3) held throughout
    assert counts[-1] == 3
    restarts = [e["host"] for e in site.journal()[start:]
                if e.get("event") == "step" and e.get("kind") == "restart" and e.get("target") == "etcd"]
    assert restarts[0] == "h3" and sorted(restarts) == ["h1", "h2", "h3"], restarts
    print(f"\nquorum-safe etcd roll: {len(counts)} probes, min {min(counts)} healthy, {run.seconds:.1f} s")


def _etcdctl(site):
    """etcdctl (v3) with the etcd-admin certificate: ctl(*args, endpoints=(1, 2)) -> CompletedProcess."""
    pki = site.pki()
    tls = [f"--cacert={pki.crt_path('etcd-ca')}", f"--cert={pki.crt_path('etcd-admin')}",
           f"--key={pki.key_path('etcd-admin')}"]
    addrs = {n: site.tb.host(n).address for n in MASTERS}

    def ctl(*args, endpoints=(1, 2)):
        eps = ",".join(f"https://{addrs[n]}:2379" for n in endpoints)
        return subprocess.run(["etcdctl", f"--endpoints={eps}", "--dial-timeout=2s", "--command-timeout=3s", *tls,
                               *args], capture_output=True, text=True, timeout=20, check=False,
                              env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"})
    return ctl


def _members(ctl, endpoints=(1, 2)) -> dict:
    """{name: member id} of the started members (an unstarted entry has no name)."""
    return {ln.split(", ")[2]: ln.split(", ")[0] for ln in ctl("member", "list", endpoints=endpoints)
            .stdout.splitlines() if ln.split(", ")[2]}


def test_a_member_whose_host_was_reinstalled_rejoins_under_its_name(site):
    """h3's etcd data, config and executables are gone (the host re-installed): apply removes its old entry,
    adds it again and starts it with initial-cluster-state existing, behind the others-healthy gate; a
    continuous write/read probe through the other members never fails for longer than a leader election."""

    ctl = _etcdctl(site)
    before = _members(ctl)
    assert set(before) == {"h1", "h2", "h3"}, before
    site.tb.ssh(3, "systemctl stop etcd && rm -rf /var/lib/etcd /etc/etcd /usr/local/bin/etcd /usr/local/bin/etcdctl")
    writes = itertools.count(1)

    def probe():
        i = str(next(writes))
        return ctl("put", "/probe/rejoin", i).returncode == 0 and \
            ctl("get", "/probe/rejoin", "--print-value-only").stdout.strip() == i

    with Sampler(probe) as sampler:
        plan = cluster.installer("plan", *site.args())
        assert plan.rc == 0 and "rejoin etcd cluster: no etcd data" in plan.stdout, _fail(plan)
        run = site.apply()
    assert run.rc == 0, _fail(run)
    worst, down_since = longest_outage(sampler.samples)
    assert sampler.samples and down_since is None and worst < 5.0, (worst, sampler.samples[-5:])
    after = _members(ctl, endpoints=(1, 2, 3))
    assert set(after) == {"h1", "h2", "h3"} and after["h3"] != before["h3"], (before, after)
    assert after["h1"] == before["h1"] and after["h2"] == before["h2"]
    r = ctl("get", "/probe/rejoin", "--print-value-only", endpoints=(3,))
    assert r.returncode == 0 and r.stdout.strip(), r.stderr  # h3 serves the data it got from the others
    check = site.check()
    assert check.rc == 0, _fail(check)
    print(f"\netcd member rejoin: {len(sampler.samples)} probes, longest failure {worst:.1f} s, "
          f"apply {run.seconds:.1f} s")


def test_a_member_the_cluster_removed_rejoins_with_its_data_moved_aside(site):
    """h3's entry was removed (as by a join stopped after `member remove`) and etcd then started on it by hand:
    it exits for good ("the member has been permanently removed"), its data stays. apply sees the member list
    without h3's peer URL, moves the data aside and h3 rejoins; the check is green."""
    ctl = _etcdctl(site)
    old = _members(ctl)["h3"]
    site.tb.ssh(3, "systemctl stop etcd")
    r = ctl("member", "remove", old)
    assert r.returncode == 0, r.stderr
    site.tb.ssh(3, "systemctl start etcd", check=False)
    cluster.wait_for(lambda: site.tb.ssh(3, "systemctl is-active etcd", check=False).returncode != 0, 60, 1.0,
                     what="etcd on h3 to stop as a removed member")
    assert site.tb.ssh(3, "test -d /var/lib/etcd/member", check=False).returncode == 0
    plan = cluster.installer("plan", *site.args())
    assert plan.rc == 0 and "member the cluster removed" in plan.stdout, _fail(plan)
    run = site.apply()
    assert run.rc == 0, _fail(run)
    now = _members(ctl, endpoints=(1, 2, 3))
    assert set(now) == {"h1", "h2", "h3"} and now["h3"] != old, now
    moved = site.tb.ssh(3, "ls -d /var/lib/etcd.removed-*").stdout.split()
    assert moved, "the removed member's data is kept aside"
    check = site.check()
    assert check.rc == 0, _fail(check)


def test_node_units_heal_after_etcd_comes_back(site):
    """etcd down on every master while flanneld, docker, kubelet and kube-proxy restart on h4: once etcd is
    back they all recover by themselves (no re-apply) and the check is green."""
    for n in MASTERS:
        site.tb.ssh(n, "systemctl stop etcd")
    try:
        site.tb.ssh(4, "systemctl --no-block restart flanneld docker kubelet kube-proxy")
        time.sleep(15)
    finally:
        for n in MASTERS:
            site.tb.ssh(n, "systemctl --no-block start etcd")
    units = "flanneld docker kubelet kube-proxy"
    cluster.wait_for(lambda: site.tb.ssh(4, f"systemctl is-active {units}", check=False).returncode == 0,
                     180, 2.0, what=f"{units} on h4 to come back by themselves")
    run = cluster.wait_for(lambda: (lambda r: r if r.rc == 0 else None)(site.check()), 120, 3.0,
                           what="the check to be green again")
    assert run.rc == 0


def test_reapply_changes_nothing_and_is_fast(site):
    run = site.apply()
    assert run.rc == 0, _fail(run)
    assert "nothing to do" in run.stderr and "nothing to do" in run.stdout
    print(f"\nconverged re-apply: {run.seconds:.1f} s")
    assert run.seconds < 20
    plan = cluster.installer("plan", *site.args(), "--json")
    assert plan.rc == 0, _fail(plan)
    assert json.loads(plan.stdout)["empty"] is True


def test_changed_config_is_diffed_and_restarts_only_its_unit(site):
    tb = site.tb
    tb.ssh(2, "sed -i 's/timeout connect 5s/timeout connect 9s/' /etc/haproxy/haproxy.cfg")
    plan = cluster.installer("plan", *site.args(), "--json")
    assert plan.rc == 0, _fail(plan)
    d = json.loads(plan.stdout)
    steps = [s for p in d["phases"] for w in p["waves"] for s in w["steps"]]
    assert [(s["host"], s["kind"], s["target"]) for s in steps] == [
        ("h2", "put", "/etc/haproxy/haproxy.cfg"), ("h2", "restart", "haproxy")]
    assert "-    timeout connect 9s" in steps[0]["diff"] and "+    timeout connect 5s" in steps[0]["diff"]
    text = cluster.installer("plan", *site.args())
    assert "h2" in text.stdout and "restart haproxy" in text.stdout
    run = site.apply()
    assert run.rc == 0, _fail(run)
    assert "/etc/haproxy/haproxy.cfg" in run.stderr and "nothing to do" not in run.stderr


def test_vip_moves_when_haproxy_stops_on_its_holder(site):
    tb = site.tb
    inv, pki, session = site.inventory(), site.pki(), default_session()
    holder = cluster.wait_for(lambda: cluster.vip_holder(tb, MASTERS), 15, what="a VIP holder")
    t0 = time.monotonic()
    tb.ssh(holder, "systemctl stop haproxy")
    try:
        new = cluster.wait_for(lambda: (lambda h: h if h not in (None, holder) else None)(
            cluster.vip_holder(tb, MASTERS)), 20, 0.2, what="the VIP to move")
        ok, detail = cluster.wait_for(lambda: (lambda r: r if r[0] else None)(checks_mod.apiserver_healthz(
            inv, pki, session, inv.cluster.vip, inv.cluster.lb_port)), 20, 0.2, what="/healthz via the VIP")
        print(f"\nVIP moved h{holder} -> h{new}; /healthz via VIP answers after {time.monotonic() - t0:.1f} s")
    finally:
        tb.ssh(holder, "systemctl start haproxy")


def test_controller_manager_leader_fails_over(site):
    tb = site.tb
    inv, pki, session = site.inventory(), site.pki(), default_session()

    def leader_host():
        holder, _ = checks_mod.leader(inv, pki, session, "kube-controller-manager")
        return holder.split("_")[0] if holder else None

    first = cluster.wait_for(leader_host, 30, what="a controller-manager leader")
    n = int(first[1:])
    t0 = time.monotonic()
    tb.ssh(n, "systemctl stop kube-controller-manager")
    try:
        second = cluster.wait_for(lambda: (lambda h: h if h not in (None, first) else None)(leader_host()),
                                  90, 1.0, what="another controller-manager to take over")
        print(f"\ncontroller-manager leader {first} -> {second} in {time.monotonic() - t0:.1f} s")
    finally:
        tb.ssh(n, "systemctl start kube-controller-manager")


def test_add_node_joins_without_touching_the_masters(site):
    tb = site.tb
    pids = {n: tb.ssh(n, "systemctl show -p MainPID --value kube-apiserver").stdout.strip() for n in MASTERS}
    start = len(site.journal())
    run = cluster.installer("add-node", "h6", *site.args(site.inv5))
    assert run.rc == 0, _fail(run)
    print(f"\nadd-node h6: {run.seconds:.1f} s")
    steps = [e for e in site.journal()[start:] if e.get("event") == "step"]
    others = {(e["host"], e["kind"], e["target"]) for e in steps if e["host"] not in ("h6", "control")}
    assert others == {(f"h{n}", "put", "/etc/hosts") for n in (1, 2, 3, 4, 5)}, others
    assert {n: tb.ssh(n, "systemctl show -p MainPID --value kube-apiserver").stdout.strip() for n in MASTERS} == pids
    ok, detail = checks_mod.nodes_ready(site.inventory(site.inv5), site.pki(), default_session(), ["h4", "h5", "h6"])
    assert ok, detail
    check = site.check(site.inv5)
    assert check.rc == 0, _fail(check)


def test_sudo_user_sees_the_converged_cluster(site):
    """The same plan over the non-root user `tb` with sudo: facts read through sudo, nothing to do."""
    inv = cluster.write_inventory(site.tb, site.work / "inventory-tb.yaml", 6, user="tb", ca_file=site.ca)
    run = cluster.installer("plan", *site.args(inv), "--json")
    assert run.rc == 0, _fail(run)
    assert json.loads(run.stdout)["empty"] is True


def test_certs_renew_reissues_what_is_due_and_rolls_it_out(site):
    """`certs renew` with every leaf certificate due: new certificates on every host, same CA, healthy cluster."""
    inv_path = site.work / "inventory-renew.yaml"
    doc = yaml.safe_load(site.inv5.read_text())
    doc["cluster"]["renew_within_days"] = 3650  # every leaf (valid 3650 days) is due; the CA is kept
    inv_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ca = site.pki().ca_pem()
    crt = PATHS["apiserver_crt"]
    before = {n: site.tb.ssh(n, f"sha256sum {crt}").stdout.split()[0] for n in MASTERS}
    status = cluster.installer("certs", "check", "-i", str(inv_path), "--state", str(site.state), "--json")
    assert status.rc != 0 and "expiring" in status.stdout
    run = cluster.installer("certs", "renew", *site.args(inv_path))
    assert run.rc == 0, _fail(run)
    assert site.pki().ca_pem() == ca
    after = {n: site.tb.ssh(n, f"sha256sum {crt}").stdout.split()[0] for n in MASTERS}
    assert all(after[n] != before[n] for n in MASTERS), (before, after)
    served = ssl.get_server_certificate((site.tb.host(1).address, 6443))
    issued = site.pki().crt_path("apiserver").read_text()
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(issued)  # restarted onto the new one
    check = site.check(site.inv5)
    assert check.rc == 0, _fail(check)
    again = site.apply(site.inv5)  # with the usual renew window nothing is due any more
    assert again.rc == 0 and "nothing to do" in again.stderr, _fail(again)


def test_etcd_membership_changes_one_member_per_run_and_a_moved_member_is_refused(site):
    """Two hosts added to the etcd group: the plan adds one and defers the other (tests/e2e/
    test_etcd_membership.py applies such changes); a member kept under its name at another address is refused
    by plan and apply before anything happens."""
    recorded = json.loads((site.state / "etcd-members.json").read_text())["members"]
    assert recorded == {site.tb.host(n).name: site.tb.host(n).address for n in MASTERS}
    doc = yaml.safe_load(site.inv5.read_text())
    for i in (3, 4):  # h4 and h5 would join the running 3-member cluster (5 members)
        doc["hosts"][i]["roles"] = ["node", "etcd"]
    inv_path = site.work / "inventory-etcd5.yaml"
    inv_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    start = len(site.journal())
    plan = cluster.installer("plan", *site.args(inv_path))
    assert plan.rc == 0 and "etcd member add h4: member add h4 --peer-urls=" in plan.stdout, _fail(plan)
    assert "deferred: etcd membership: h5 joins by the next apply" in plan.stdout, plan.stdout
    doc = yaml.safe_load(site.inv5.read_text())
    doc["hosts"][2]["address"] = f"{site.tb.net}.60"  # h3 "moved": its peer URL is its identity
    moved = site.work / "inventory-h3-moved.yaml"
    moved.write_text(yaml.safe_dump(doc, sort_keys=False))
    for cmd in ("plan", "apply"):
        run = cluster.installer(cmd, *site.args(moved))
        assert run.rc == 2 and "h3 (" in run.stderr and "changed address" in run.stderr, _fail(run)
        assert "Traceback" not in run.stderr and "take it out of the etcd group" in run.stderr
    assert [e for e in site.journal()[start:] if e.get("event") == "step"] == []


def test_remove_node_drains_and_takes_h6_off_the_cluster(site):
    """h6 (joined by add-node) runs a pod; taken out of the inventory, remove-node drains it, deletes its Node,
    stops and disables its units, removes the installer's files and docker's data, forgets it; the cluster
    check of the remaining hosts is green and the other nodes drop the route to its pod subnet."""
    tb = site.tb
    inv = site.inventory()
    image = f"{inv.registry.endpoint}/{inv.registry.project}/pause-amd64:3.1"
    (tb.merged(1) / "root/pod-h6.yaml").write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-h6\n  namespace: default\n"
        f"spec:\n  nodeName: h6\n  containers:\n  - name: main\n    image: {image}\n")
    _kubectl(site, "apply -f /root/pod-h6.yaml")
    cluster.wait_for(lambda: _pod(site, "web-h6").get("status", {}).get("phase") == "Running", 120, 1.0,
                     what="web-h6 Running")
    subnet = tb.ssh(6, ". /run/flannel/subnet.env && echo $FLANNEL_SUBNET").stdout.strip()
    net6 = str(ipaddress.ip_interface(subnet).network)
    assert net6 in tb.ssh(4, "ip -4 route show").stdout
    refused = cluster.installer("remove-node", "h5", "-i", str(site.inv4), "--state", str(site.state))
    assert refused.rc == 2 and "still in the inventory" in refused.stderr, _fail(refused)
    run = cluster.installer("remove-node", "h6", "-i", str(site.inv4), "--state", str(site.state),
                            "--known-hosts", str(site.known_hosts))
    assert run.rc == 0, _fail(run)
    assert "cordon and drain Node h6" in run.stderr and "Node deleted" in run.stderr
    assert _pod(site, "web-h6") == {}
    nodes = json.loads(_kubectl(site, "get nodes -o json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["h4", "h5"]
    out = tb.ssh(6, "systemctl is-enabled kubelet kube-proxy flanneld docker 2>&1; pgrep -c 'kubelet|dockerd|flanneld'; "
                    "ls /usr/local/bin /etc/kubernetes 2>&1; ls -A /var/lib/docker | wc -l; ip link show flannel.1 2>&1",
                 check=False).stdout
    assert "enabled" not in out.replace("not-found", "").split("\n0\n")[0], out
    assert "kubelet" not in tb.ssh(6, "ls /usr/local/bin", check=False).stdout
    assert tb.ssh(6, "test -e /etc/kubernetes/kubelet", check=False).returncode != 0
    assert tb.ssh(6, "ls -A /var/lib/docker | wc -l").stdout.strip() == "0"
    assert "h6" not in json.loads((site.state / "hosts.json").read_text())["hosts"]
    cluster.wait_for(lambda: net6 not in tb.ssh(4, "ip -4 route show").stdout, 30, 1.0,
                     what="h4 to drop the route to h6's pod subnet (lease deleted)")
    again = cluster.installer("remove-node", "h6", "-i", str(site.inv4), "--state", str(site.state))
    assert again.rc == 2 and "not a host this state directory knows" in again.stderr, _fail(again)
    check = cluster.wait_for(lambda: (lambda r: r if r.rc == 0 else None)(site.check()), 60, 3.0,
                             what="the check of the remaining hosts")
    assert check.rc == 0


def test_etcd_restore_brings_back_what_the_snapshot_had(site):
    """Objects written, a snapshot taken, objects changed, two members' data destroyed (quorum lost): restore
    brings the cluster back as the snapshot had it, with the data from before moved aside, and the check is green."""
    tb = site.tb
    (tb.merged(1) / "root/cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: restore-probe\n  namespace: default\ndata:\n  a: '1'\n")
    (tb.merged(1) / "root/cm2.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-snapshot\n  namespace: default\ndata:\n  b: '2'\n")
    _kubectl(site, "apply -f /root/cm.yaml")
    snap = cluster.installer("etcd", "snapshot", "-i", str(site.inv4), "--state", str(site.state), "--known-hosts",
                             str(site.known_hosts), "--json")
    assert snap.rc == 0, _fail(snap)
    path = json.loads(snap.stdout)["path"]
    _kubectl(site, "delete -f /root/cm.yaml")
    _kubectl(site, "apply -f /root/cm2.yaml")
    for n in (2, 3):
        tb.ssh(n, "systemctl stop etcd && rm -rf /var/lib/etcd")
    run = cluster.installer("etcd", "restore", path, "-i", str(site.inv4), "--state", str(site.state),
                            "--known-hosts", str(site.known_hosts))
    assert run.rc == 0, _fail(run)
    assert "stop kube-apiserver on h1, h2, h3" in run.stderr and "etcd healthy" in run.stderr
    assert _kubectl(site, "get configmap restore-probe -n default -o name", check=False).returncode == 0
    assert _kubectl(site, "get configmap after-snapshot -n default -o name", check=False).returncode != 0
    assert tb.ssh(1, "ls -d /var/lib/etcd.before-restore-*", check=False).returncode == 0
    check = cluster.wait_for(lambda: (lambda r: r if r.rc == 0 else None)(site.check()), 120, 3.0,
                             what="the check after the restore")
    assert check.rc == 0


def test_upgrade_to_the_next_patch_release_rolls_without_downtime(site, tmp_path_factory):
    """`installer upgrade` with a 1.10.4 bundle: masters one at a time behind their gates, nodes one at a time
    (cordoned and drained, replaced, waited for Ready, uncordoned); /healthz through the VIP never down longer than a VIP failover and etcd never without
    quorum (continuous probes); every host runs 1.10.4 after it, the evidence lists the change per host, and a
    second run says there is nothing to do. A minor jump is refused before anything happens.

    The 1.10.4 bundle is a delta computed from the site's receipt (`installer receipt` on the booted hosts):
    only what the site lacks is carried, and upgrade combines it with the unpacked 1.10.3 bundle."""
    import hashlib

    receipt = tmp_path_factory.mktemp("receipt") / "site-receipt.json"
    got = cluster.installer("receipt", "-i", str(site.inv4), "--state", str(site.state), "--known-hosts",
                            str(site.known_hosts), "-o", str(receipt))
    assert got.rc == 0, _fail(got)
    held = json.loads(receipt.read_text())
    assert [b["version"] for b in held["bundles"]] == ["1.10.3"], held["bundles"]
    kubelet = site.tb.ssh(4, "sha256sum /usr/local/bin/kubelet").stdout.split()[0]
    assert held["hosts"]["h4"]["binaries"]["/usr/local/bin/kubelet"] == kubelet
    assert any(r.startswith("docker-ce-18.09.1") for r in held["hosts"]["h4"]["rpms"]), held["hosts"]["h4"]["rpms"]
    assert "password" not in receipt.read_text().lower()
    seeded = held["registry"]  # every blob of the seeded images, as the site registry answers for them
    assert seeded["address"] == site.inventory().registry.endpoint and len(seeded["blobs"]) >= 7, seeded
    newer = cluster.build_bundle(tmp_path_factory.mktemp("bundle-1.10.4"), release="v1.10.4", since=receipt)
    assert newer.path.name == "k8s-1.10.4.delta-from-1.10.3.bundle.tar.zst", newer.path
    carried = hashlib.sha256(newer.path.read_bytes()).hexdigest()  # not changed by being applied
    inv, pki, session = site.inventory(), site.pki(), default_session()
    vip, port = inv.cluster.vip, inv.cluster.lb_port

    def probe():
        return (checks_mod.apiserver_healthz(inv, pki, session, vip, port)[0],
                sum(r.ok for r in checks_mod.etcd_health(inv, pki, session)))

    args = site.args(bundle=newer)
    # a pod without a controller on h4: the drain before h4's kubelet is replaced evicts it
    image = f"{inv.registry.endpoint}/{inv.registry.project}/pause-amd64:3.1"
    (site.tb.merged(1) / "root/drain-probe.yaml").write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: drain-probe\n  namespace: default\n"
        f"spec:\n  nodeName: h4\n  containers:\n  - name: main\n    image: {image}\n")
    assert _kubectl(site, "apply -f /root/drain-probe.yaml", check=False).returncode == 0
    start = len(site.journal())
    with Sampler(probe, settle=30.0, up=lambda v: v[0]) as sampler:
        run = cluster.installer("upgrade", *args)
    assert run.rc == 0, _fail(run)
    assert "upgrade: Kubernetes 1.10.3 -> 1.10.4" in run.stderr, run.stderr[-2000:]
    assert "(a delta: the files it does not carry come from" in run.stderr, run.stderr[-2000:]
    assert hashlib.sha256(newer.path.read_bytes()).hexdigest() == carried
    worst, down_since = longest_outage(sampler.samples, up=lambda v: v[0])
    assert sampler.samples and down_since is None and worst < 10.0, worst  # keepalived moves the VIP in a few seconds
    quorum = [v[1] for _, v in sampler.samples]
    assert quorum and min(quorum) >= 2, quorum
    for n in (1, 2, 3):
        assert "v1.10.4" in site.tb.ssh(n, "/usr/local/bin/kube-apiserver --version").stdout
    for n in (4, 5):
        assert "v1.10.4" in site.tb.ssh(n, "/usr/local/bin/kubelet --version").stdout
    steps = [e for e in site.journal()[start:] if e.get("event") == "step"]
    order = [(e["host"], e["kind"], e["target"]) for e in steps if e.get("kind") in ("restart", "gate", "drain",
             "uncordon") and e["target"] in ("kubelet", "node-ready", "h4", "h5")]
    assert order == [("control", "drain", "h4"), ("h4", "restart", "kubelet"), ("control", "gate", "node-ready"),
                     ("control", "uncordon", "h4"), ("control", "drain", "h5"), ("h5", "restart", "kubelet"),
                     ("control", "gate", "node-ready"), ("control", "uncordon", "h5")], order
    drained = next(e for e in steps if e.get("kind") == "drain" and e["target"] == "h4")
    assert "not coming back: default/drain-probe" in drained["detail"], drained
    assert _kubectl(site, "get pod drain-probe -n default -o name", check=False).returncode != 0  # evicted
    for n in ("h4", "h5"):  # schedulable again, and the installer's mark is gone
        node = json.loads(_kubectl(site, f"get node {n} -o json").stdout)
        assert not node["spec"].get("unschedulable"), node["spec"]
        assert "k8s-offline.io/cordoned-for-upgrade" not in (node["metadata"].get("annotations") or {})
    report = json.loads((site.state / "report.json").read_text())
    changed = report["versions"]["hosts"]  # {host: {component: {from, to}}}
    assert changed["h1"]["kubernetes"]["to"].lstrip("v") == "1.10.4", report["versions"]
    assert changed["h4"]["kubernetes"]["from"].lstrip("v") == "1.10.3", report["versions"]
    again = cluster.installer("upgrade", *args)
    assert again.rc == 0 and "already at v1.10.4: nothing to do" in again.stderr, _fail(again)
    print(f"\nupgrade 1.10.3 -> 1.10.4: {run.seconds:.1f} s, longest /healthz outage {worst:.1f} s, "
          f"min etcd healthy {min(quorum)}")
