"""Helpers for the apply end-to-end tests: a bundle from the stand-in upstreams, a site registry on the
control side, the inventory for a booted testbed, the test-harness host preparation, and the CLI runner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_CACHE = Path(os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"))
INSTALLER = [sys.executable, "-m", "installer.cli"]
REGISTRY_PORT = 5000


@dataclass(frozen=True)
class BuiltBundle:
    """A signed bundle built from the stand-ins, its public key, and the fixture base repo (CentOS base set)."""

    path: Path
    pub: Path
    base_rpms: List[Path]
    seconds: float


def build_bundle(workdir: Path, release: str = "v1.10.3", since: Optional[Path] = None,
                 profile: Optional[str] = None) -> BuiltBundle:
    """Start the stand-in upstreams, build the default spec's bundle (Python 3.11 wheels only), stop them;
    `release`: another Kubernetes release the stand-ins serve (its spec differs only there); `since`: a delta
    bundle against that site receipt (or lock); `profile`: the stand-ins' size profile ("small", "release";
    default $UPSTREAM_PROFILE or small)."""
    from bundler.build import run_build
    from bundler.cache import Cache
    from contract.bundle import generate_keypair
    from tests.fixtures.upstream import rpms, start, yumrepos

    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    ups = start(workdir / "upstreams", cache=UPSTREAM_CACHE, profile=profile)
    try:
        priv, pub = generate_keypair(workdir / "keys")
        spec = workdir / "bundle-spec.yaml"
        # the stand-ins write the project's spec with their test signing keys pinned, when they sign RPMs
        fixture_spec = ups.dir / "bundle-spec.yaml" if release == "v1.10.3" else ups.spec_for(release)
        shutil.copy(fixture_spec if fixture_spec.exists() else ROOT / "bundle-spec.yaml", spec)
        summary = run_build(spec, ups.mirrors_file, priv, workdir / "dist", Cache(workdir / "cache"),
                            pythons=["3.11"], progress=lambda event, **fields: None, since_path=since)
        base_dir = ups.www / yumrepos.repo_path("base") / "Packages"
        base = [base_dir / f"{nvra}.rpm" for nvra in sorted(rpms.INSTALLED)]
    finally:
        ups.stop()
    missing = [p for p in base if not p.exists()]
    assert not missing, f"fixture base RPMs missing: {missing[:3]}"
    return BuiltBundle(summary.bundle, pub, base, time.monotonic() - t0)


# The unit of the docker-ce 18.09 RPM, kept close to the real one. The fixture RPM's /usr/bin/dockerd execs the
# test host's real Debian dockerd 20.10, which notifies systemd (Type=notify). Left out of the real unit, on
# purpose: `BindsTo=containerd.service` (dockerd spawns its own containerd when started without
# --containerd, which the installer's drop-in does) and `Requires=docker.socket` (the drop-in listens on
# unix:// itself; nothing socket-activates dockerd on the test hosts). The installer adds its drop-in.
DOCKER_UNIT = """[Unit]
Description=Docker Application Container Engine
Documentation=https://docs.docker.com
After=network-online.target firewalld.service
Wants=network-online.target

[Service]
Type=notify
# the default is not to use systemd for cgroups because the delegate issues still
# exists and systemd currently does not support the cgroup feature set required
# for containers run by docker
ExecStart=/usr/bin/dockerd -H unix://
ExecReload=/bin/kill -s HUP $MAINPID
TimeoutSec=0
RestartSec=2
Restart=always
StartLimitBurst=3
StartLimitInterval=60s
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# set delegate yes so that systemd does not reset the cgroups of docker containers
Delegate=yes
# kill only the docker process, not all processes in the cgroup
KillMode=process

[Install]
WantedBy=multi-user.target
"""


def register_base_rpms(tb, hosts: Sequence[int], rpms: Sequence[Path]) -> None:
    """Test-harness step, not an installer step: a real CentOS 7 host has the base packages installed;
    the Debian test hosts get them in the rpm database only (--justdb), so the bundle's packages resolve.
    Also the docker.service unit that the real docker-ce RPM would install."""
    for n in hosts:
        d = tb.merged(n) / "var/tmp/base-rpms"
        d.mkdir(parents=True, exist_ok=True)
        for p in rpms:
            shutil.copy(p, d / p.name)
        unit = tb.merged(n) / "usr/lib/systemd/system/docker.service"
        unit.write_text(DOCKER_UNIT)
    procs = [subprocess.Popen(tb.ssh_argv(n) + [
        "rpm -q bash >/dev/null 2>&1 || rpm -i --justdb --nodeps --noscripts --notriggers /var/tmp/base-rpms/*.rpm"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in hosts]
    for n, p in zip(hosts, procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"h{n}: registering base RPMs failed: {err[-1000:]}"


class Registry:
    """Debian's docker-registry on the control address: plain HTTP by default (registry.insecure in the
    inventory), or HTTPS with the given certificate and key (clients then need the CA that signed it)."""

    def __init__(self, workdir: Path, address: str, port: int = REGISTRY_PORT, *,
                 tls_cert: Optional[Path] = None, tls_key: Optional[Path] = None) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("Registry: TLS needs both tls_cert and tls_key")
        self.dir = Path(workdir)
        self.address, self.port = address, port
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.proc: Optional[subprocess.Popen] = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def endpoint(self) -> str:
        """host:port, as docker names the registry (and its /etc/docker/certs.d/ directory)."""
        return f"{self.address}:{self.port}"

    def start(self) -> Registry:
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "config.yml"
        http = {"addr": f"{self.address}:{self.port}", "secret": "e2e-test"}
        if self.tls_cert:
            http["tls"] = {"certificate": str(self.tls_cert), "key": str(self.tls_key)}
        cfg.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "storage")}, "delete": {"enabled": True}},
            "http": http,
        }))
        log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 0.5):
                return self
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                f"docker-registry did not start: {(self.dir / 'registry.log').read_text()[-1000:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def e2e_networks(tb) -> dict:
    """The cluster networks of an e2e inventory, inside 198.19.<slot>.0/24 (the testbed's slot): pods /25 in
    /28s per node, services /26, docker0's bip the last /26. Never docker's 172.17/16 default: the hosts run
    the real dockerd, which would put that on docker0."""
    slot = tb.net.rsplit(".", 1)[1]
    return {"pod_cidr": f"198.19.{slot}.0/25", "pod_subnet_len": 28, "service_cidr": f"198.19.{slot}.128/26",
            "docker_bip": f"198.19.{slot}.193/26"}


def write_inventory(tb, path: Path, n_hosts: int, *, user: str = "root", ca_file: Optional[Path] = None) -> Path:
    """3 masters (etcd + lb co-located) h1..h3, nodes h4.. up to n_hosts; registry on the control side (plain
    HTTP, or HTTPS trusted through ca_file alone: the site's registry CA, put into docker's certs.d)."""
    hosts = []
    for i in range(1, n_hosts + 1):
        h = tb.host(i)
        roles = ["master", "etcd", "lb"] if i <= 3 else ["node"]
        hosts.append({"name": h.name, "address": h.address, "roles": roles})
    inv = {
        "cluster": {"name": "e2e", "vip": tb.vip, "interface": "eth0", **e2e_networks(tb)},
        "ssh": {"user": user, "key": str(tb.key_path), "connect_timeout": 3},
        "registry": {"mode": "external", "hostname": "registry.e2e.test", "address": tb.control_address,
                     "port": REGISTRY_PORT, "insecure": True, "project": "kubernetes"},
        "hosts": hosts,
    }
    if ca_file is not None:
        inv["registry"].update(insecure=False, ca_file=str(ca_file))
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


HARBOR_HOSTNAME = "harbor.e2e.test"


def write_harbor_inventory(tb, path: Path, *, cluster_host: int = 1, registry_host: int = 2,
                           user: str = "root") -> Path:
    """One host with every cluster role and Harbor installed by apply on another (registry.mode install)."""
    h = tb.host(cluster_host)
    inv = {
        "cluster": {"name": "e2e-harbor", "vip": tb.vip, "interface": "eth0", **e2e_networks(tb)},
        "ssh": {"user": user, "key": str(tb.key_path), "connect_timeout": 3},
        "registry": {"mode": "install", "hostname": HARBOR_HOSTNAME, "address": tb.host(registry_host).address,
                     "port": 443, "project": "kubernetes", "public": True},
        "hosts": [{"name": h.name, "address": h.address, "roles": ["master", "etcd", "lb", "node"]}],
    }
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


def unit_invocation(tb, n: int, unit: str) -> str:
    """A unit's InvocationID on host n: changes with every start, empty when it never ran."""
    return tb.ssh(n, f"systemctl show -p InvocationID --value {unit}").stdout.strip()


@dataclass
class Run:
    """A finished installer command."""

    rc: int
    stdout: str
    stderr: str
    seconds: float


def installer(*args: str, timeout: float = 600, env: Optional[dict] = None) -> Run:
    """Run `python -m installer.cli ARGS` from the repository root."""
    t = time.monotonic()
    p = subprocess.run([*INSTALLER, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    return Run(p.returncode, p.stdout, p.stderr, time.monotonic() - t)


def start_installer(*args: str, log: Path) -> subprocess.Popen:
    """Start an installer command in the background (stdout+stderr to log)."""
    f = open(log, "wb")
    try:
        return subprocess.Popen([*INSTALLER, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        f.close()


def netns_exec(ns: str, cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)


def vip_holder(tb, lb_hosts: Sequence[int]) -> Optional[int]:
    """The host number holding the VIP (read from each host's network namespace)."""
    for n in lb_hosts:
        if f" {tb.vip}/" in netns_exec(tb.host(n).machine, "ip -4 -o addr show dev eth0").stdout:
            return n
    return None


def wait_for(pred, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll pred() until it returns a truthy value; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
