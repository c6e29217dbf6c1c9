"""installer check's pod network and pull checks over a scripted connector: pairs, routes, cleanup."""

import json
import re
import shutil
import socket
import subprocess

import pytest

from installer import podnet
from installer.hosts.connector import Result as Res
from installer.inventory import Inventory

INV = {
    "cluster": {"name": "t", "vip": "198.18.9.100", "pod_cidr": "198.19.9.0/25", "pod_subnet_len": 28,
                "service_cidr": "198.19.9.128/26", "docker_bip": "198.19.9.193/26"},
    "ssh": {"user": "root", "key": "/dev/null"},
    "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.9.1", "port": 5000,
                 "insecure": True},
    "hosts": [{"name": "m1", "address": "198.18.9.11", "roles": ["master", "etcd", "lb"]},
              {"name": "n1", "address": "198.18.9.21", "roles": ["node"]},
              {"name": "n2", "address": "198.18.9.22", "roles": ["node"]}],
}
IPS = {"n1": "198.19.9.2", "n2": "198.19.9.18"}


class Host:
    """What a host answers: probes, reach tests (blocked pairs fail), flanneld state, kubelet file, pulls."""

    def __init__(self, name, world):
        self.name, self.world = name, world
        self.calls = []

    def run(self, cmd, *, sudo=None, timeout=None, check=True, input=None):
        self.calls.append(cmd if isinstance(cmd, str) else " ".join(cmd))
        line = self.calls[-1]
        if "exec \"$P\" - " in line:
            assert input == podnet.PROBE_SCRIPT  # the script travels on stdin
        if "exec \"$P\" - add" in line:
            if self.name in self.world.get("no_cni", ()):
                return Res(3, json.dumps({"error": "no CNI configuration in /etc/cni/net.d", "stage": "config"}), "")
            return Res(0, json.dumps({"ip": IPS[self.name], "conf": "/etc/cni/net.d/10-flannel.conflist"}), "")
        if "exec \"$P\" - del" in line:
            self.world.setdefault("deleted", []).append(self.name)
            return Res(0, "{}", "")
        if "reach" in line:
            src = f"pod on {self.name}" if "ip netns exec" in line else self.name
            if self.world.get("reach_raises") == self.name:
                raise RuntimeError("ssh: connection lost")
            out = []
            if line.startswith(podnet.FLANNELD_STATE):  # a host's reach test asks systemd first
                assert "ip netns exec" not in line
                out.append(self._flanneld())
            for row in input.splitlines():
                name, ip, _ = row.split()
                if (src, name) in self.world.get("blocked", ()):
                    out.append(f"fail {name} {ip} dev docker0 src 198.19.9.193 uid 0")
                else:
                    out.append(f"ok {name}")
            return Res(0, "\n".join(out) + "\n", "")
        if line == "systemctl is-active flanneld":
            down = self.name in self.world.get("flanneld_down", ())
            return Res(3 if down else 0, "inactive\n" if down else "active\n", "")
        if line.startswith("docker pull"):
            err = self.world.get("pull", {}).get(self.name)
            return Res(1, "", err) if err else Res(0, "3.1: Pulling from kubernetes/pause-amd64\n", "")
        raise AssertionError(f"unexpected command {line!r}")

    def _flanneld(self):
        return "flanneld 3 inactive" if self.name in self.world.get("flanneld_down", ()) else "flanneld 0 active"

    def get(self, path):
        assert path == "/etc/kubernetes/kubelet"
        return b'KUBELET_ARGS="--pod-infra-container-image=reg.test:5000/kubernetes/pause-amd64:3.1 \\\n--v=2"\n'

    def close(self):
        pass


@pytest.fixture
def inv():
    return Inventory.model_validate(INV)


def run(inv, world):
    hosts = {}

    def conn(_, h):
        return hosts.setdefault(h.name, Host(h.name, world))

    return podnet.pod_network(inv, conn), hosts


def test_every_host_and_pod_reaches_every_probe(inv):
    world = {}
    results, hosts = run(inv, world)
    assert all(r.ok for r in results), [r.line() for r in results]
    assert {r.target for r in results if r.name == "pod network probe"} == {"n1", "n2"}
    summary = [r for r in results if r.name == "pod network"]
    # 3 hosts reach 2 probes each + each pod reaches the other node's pod
    assert len(summary) == 1 and summary[0].detail.startswith("8 TCP paths")
    assert sorted(world["deleted"]) == ["n1", "n2"]
    assert {r.target for r in results if r.name == "flanneld"} == {"m1", "n1", "n2"}


def test_a_blocked_pair_names_both_ends_and_the_route(inv):
    world = {"blocked": {("m1", "n2"), ("pod on n1", "n2")}}
    results, _ = run(inv, world)
    bad = [r for r in results if not r.ok]
    assert {r.target for r in bad} == {"m1 -> pod on n2", "pod on n1 -> pod on n2"}
    for r in bad:
        assert IPS["n2"] in r.detail and "dev docker0" in r.detail and "hint:" in r.detail


def test_stopped_flanneld_fails_naming_the_host(inv):
    results, _ = run(inv, {"flanneld_down": {"n2"}})
    bad = [r for r in results if not r.ok]
    assert [(r.name, r.target) for r in bad] == [("flanneld", "n2")]
    assert "journalctl -u flanneld" in bad[0].detail


def test_flanneld_is_asked_in_the_hosts_reach_command_not_a_round_of_its_own(inv):
    results, hosts = run(inv, {})
    assert [c for c in hosts["m1"].calls] == [c for c in hosts["m1"].calls if c.startswith(podnet.FLANNELD_STATE)]
    assert len(hosts["m1"].calls) == 1  # m1 runs no probe: its one command is the reach test with flanneld
    assert not any(c == "systemctl is-active flanneld" for h in hosts.values() for c in h.calls)
    assert {r.target: r.ok for r in results if r.name == "flanneld"} == {"m1": True, "n1": True, "n2": True}


def test_without_any_probe_flanneld_is_still_checked_everywhere(inv):
    results, hosts = run(inv, {"no_cni": {"n1", "n2"}, "flanneld_down": {"m1"}})
    assert {r.target: r.ok for r in results if r.name == "flanneld"} == {"m1": False, "n1": True, "n2": True}
    assert all("systemctl is-active flanneld" in h.calls for h in hosts.values())


def test_a_reach_command_without_the_flanneld_line_fails_flanneld_for_that_host(inv, monkeypatch):
    monkeypatch.setattr(Host, "_flanneld", lambda self: "" if self.name == "n1" else "flanneld 0 active")
    results, _ = run(inv, {})
    bad = [r for r in results if not r.ok]
    assert [(r.name, r.target) for r in bad] == [("flanneld", "n1")] and "no answer" in bad[0].detail


def test_missing_cni_config_fails_the_probe_and_still_cleans_up(inv):
    world = {"no_cni": {"n1"}}
    results, _ = run(inv, world)
    bad = [r for r in results if not r.ok]
    assert [(r.name, r.target) for r in bad] == [("pod network probe", "n1")]
    assert "no CNI configuration" in bad[0].detail
    assert sorted(world["deleted"]) == ["n1", "n2"]


def test_probes_are_removed_when_a_reach_test_breaks(inv):
    world = {"reach_raises": "m1"}
    results, _ = run(inv, world)
    assert any(not r.ok and r.target == "m1 -> probes" and "connection lost" in r.detail for r in results)
    assert sorted(world["deleted"]) == ["n1", "n2"]


@pytest.mark.parametrize("err, kind", [
    ("Error response from daemon: Get https://reg.test:5000/v2/: x509: certificate signed by unknown authority",
     "x509"),
    ("Error response from daemon: unauthorized: authentication required", "401"),
    ("Error response from daemon: manifest for reg.test:5000/kubernetes/pause-amd64:3.1 not found", "not found"),
])
def test_pull_failures_are_classified_per_node(inv, err, kind):
    world = {"pull": {"n2": err}}
    hosts = {}
    results = podnet.image_pulls(inv, lambda _, h: hosts.setdefault(h.name, Host(h.name, world)))
    by = {r.target: r for r in results}
    assert by["n1"].ok and "reg.test:5000/kubernetes/pause-amd64:3.1" in by["n1"].detail
    assert not by["n2"].ok and by["n2"].detail.split(": ", 2)[1].startswith(kind)
    assert hosts["n2"].calls == ["docker pull reg.test:5000/kubernetes/pause-amd64:3.1"]


def test_probe_script_compiles_for_the_hosts_python():
    compile(podnet.PROBE_SCRIPT, "probe", "exec")
    assert re.search(r"\bf\"", podnet.PROBE_SCRIPT) is None  # no f-strings: CentOS 7 runs it with Python 2.7


def _runs(python: str) -> bool:
    return shutil.which(python) is not None and subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0


@pytest.mark.parametrize("python", [p for p in ("python3", "python2") if _runs(p)])  # CentOS 7: python2
def test_the_reach_script_connects_to_every_target_at_once_and_routes_the_misses(python):
    """REACH_SCRIPT run for real (as on a host) against loopback: a listener is reached, a closed port fails
    with the route `ip route get` gives, a blank line is skipped."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connect is refused
    try:
        rows = f"up 127.0.0.1 {srv.getsockname()[1]}\ndown 127.0.0.1 {closed.getsockname()[1]}\n\n"
        r = subprocess.run([python, "-c", podnet.REACH_SCRIPT, "reach", "3"], input=rows, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        got = {line.split(" ")[1]: line for line in r.stdout.splitlines()}
        assert got["up"] == "ok up", r.stdout
        assert got["down"].startswith("fail down ") and "127.0.0.1" in got["down"] and " lo" in got["down"], r.stdout
    finally:
        srv.close()
        closed.close()
