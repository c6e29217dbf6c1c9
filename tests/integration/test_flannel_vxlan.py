"""The stand-in flanneld does flannel's kernel work for real: two hosts (network namespaces on a bridge) lease
subnets in a real etcd (v2 API), each builds flannel.1 (vxlan VNI 1, port 8472) with a route, a permanent
neighbour and an FDB entry for the other's lease, and TCP crosses the overlay from one host's flannel.1 address
to the other's. A deleted lease disappears from the other host. Root only; everything is removed afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.fixtures.standins import write_all

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("etcd") is None or shutil.which("ip") is None,
                                reason="needs root, ip and Debian's etcd")
NET = "198.18.249"
POD = "198.19.249.0/25"
NS = ("fvsw", "fvh1", "fvh2")


def sh(*argv, check=True):
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert not check or p.returncode == 0, f"{argv}: {p.stderr}"
    return p.stdout


def ns_json(ns, *argv):
    return json.loads(sh("ip", "-n", ns, "-j", *argv) or "[]")


@pytest.fixture
def hosts(tmp_path):
    procs = []
    try:
        sh("ip", "netns", "add", NS[0])
        sh("ip", "-n", NS[0], "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", NS[0], "link", "set", "br0", "up")
        for i, ns in ((1, NS[1]), (2, NS[2])):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", NS[0], "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", NS[0], "link", "set", f"h{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{NET}.1{i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        url = f"http://{NET}.11:2379"
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", NS[1], "etcd", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", url,
             "--advertise-client-urls", url, "--listen-peer-urls", f"http://{NET}.11:2380", "--enable-v2=true"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        binary = write_all(tmp_path / "bin", ["flanneld"])["flanneld"]

        def etcd(method, key, value=None):
            data = f"value={value}".encode() if value is not None else None
            req = urllib.request.Request(f"{url}/v2/keys{key}", data=data, method=method)
            out = subprocess.run(["ip", "netns", "exec", NS[1], "curl", "-s", "-X", method, f"{url}/v2/keys{key}"]
                                 + (["--data-urlencode", f"value={value}"] if value is not None else []),
                                 stdout=subprocess.PIPE, text=True, timeout=10).stdout
            return req, out

        deadline = time.monotonic() + 20
        while '"action":"set"' not in etcd("PUT", "/coreos.com/network/config",
                                           json.dumps({"Network": POD, "SubnetLen": 28,
                                                       "Backend": {"Type": "vxlan"}}))[1]:
            assert time.monotonic() < deadline, "etcd did not come up"
            time.sleep(0.3)
        for i, ns in ((1, NS[1]), (2, NS[2])):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, str(binary), f"-etcd-endpoints={url}", "-iface=eth0", "-ip-masq=true",
                 f"-subnet-file={tmp_path}/subnet{i}.env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield tmp_path, etcd, procs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def wait(pred, what, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def subnet(tmp_path, i):
    f = tmp_path / f"subnet{i}.env"
    if not f.exists():
        return None
    env = dict(line.split("=", 1) for line in f.read_text().split())
    return env["FLANNEL_SUBNET"]


def test_vxlan_overlay_between_two_hosts(hosts):
    tmp_path, etcd, procs = hosts
    s1, s2 = wait(lambda: subnet(tmp_path, 1), "subnet 1"), wait(lambda: subnet(tmp_path, 2), "subnet 2")
    net2 = s2.rsplit(".", 1)[0] + "." + str(int(s2.split("/")[0].rsplit(".", 1)[1]) - 1)  # x.y.z.N-1 = network
    link = ns_json(NS[1], "-d", "link", "show", "dev", "flannel.1")[0]
    data = link["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"], link["mtu"]) == (1, 8472, f"{NET}.11", 1450)
    route = wait(lambda: [r for r in ns_json(NS[1], "route", "show", "dev", "flannel.1")
                          if r["dst"] == f"{net2}/28"], "h1's route to h2's subnet")
    assert route[0]["gateway"] == net2 and "onlink" in route[0].get("flags", [])
    mac2 = ns_json(NS[2], "link", "show", "dev", "flannel.1")[0]["address"]
    neigh = ns_json(NS[1], "neigh", "show", "dev", "flannel.1")
    assert [(n["dst"], n["lladdr"]) for n in neigh] == [(net2, mac2)] and "PERMANENT" in neigh[0]["state"]
    fdb = sh("ip", "netns", "exec", NS[1], "bridge", "fdb", "show", "dev", "flannel.1")
    assert f"{mac2} dst {NET}.12 self permanent" in fdb
    masq = sh("ip", "netns", "exec", NS[1], "iptables", "-t", "nat", "-S", "POSTROUTING")
    assert f"-A POSTROUTING -s {POD} ! -d 224.0.0.0/4 -j MASQUERADE" in masq

    # TCP across the overlay: h1 -> h2's flannel.1 address (what a master -> pod connection crosses)
    srv = subprocess.Popen(["ip", "netns", "exec", NS[2], "python3", "-c",
                            "import socket;s=socket.socket();s.bind(('%s',7777));s.listen(1);c,a=s.accept();"
                            "c.send(a[0].encode());c.close()" % net2])
    try:
        got = wait(lambda: subprocess.run(
            ["ip", "netns", "exec", NS[1], "python3", "-c",
             "import socket;s=socket.create_connection(('%s',7777),2);print(s.recv(64).decode())" % net2],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip(), "TCP across vxlan")
        assert got.startswith(s1.rsplit(".", 1)[0])  # the source is h1's flannel.1 address, in the pod network
    finally:
        srv.kill()
        srv.wait(5)

    # h2 goes away and its lease is deleted: h1 drops route, neighbour and FDB entry
    os.kill(procs[2].pid, signal.SIGTERM)
    procs[2].wait(10)
    etcd("DELETE", f"/coreos.com/network/subnets/{net2}-28")
    wait(lambda: not ns_json(NS[1], "route", "show", "dev", "flannel.1"), "h1's route to h2 removed")
    assert ns_json(NS[1], "neigh", "show", "dev", "flannel.1") == []
    assert mac2 not in sh("ip", "netns", "exec", NS[1], "bridge", "fdb", "show", "dev", "flannel.1")
