"""The real dockerd on a booted test host, configured only by what the installer renders.

docker-ce is put in place the way its fixture RPM does it (the RPM's /usr/bin/dockerd and /usr/bin/docker are
wrappers of the host's Debian docker.io 20.10, plus the unit of the docker-ce RPM); daemon.json, the docker
drop-in, /etc/hosts and the certs.d CA come from installer.render for a one-host inventory. The host pulls
the fixture pause image from a TLS registry on the control side whose certificate is signed by the test's own
CA (registry.ca_file), runs it, stops it, and the testbed leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from installer import inventory as inventory_mod
from installer.render import registry_ca_path, render_host
from tests.e2e import cluster
from tests.fixtures.upstream import images, yumrepos

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("/usr/bin/docker-registry", "skopeo", "openssl")),
                       reason="docker-registry, skopeo and openssl are needed (make apt)"),
]
PAUSE = "k8s.gcr.io/pause-amd64:3.1"
REGISTRY_NAME = "registry.e2e.test"
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _openssl(*args: str) -> None:
    p = subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, f"openssl {args[0]}: {p.stderr[-1000:]}"


def make_site_ca(d: Path, address: str) -> dict:
    """The site's registry CA and a server certificate for REGISTRY_NAME / address, signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    ca, srv = d / "ca", d / "registry"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", "/CN=e2e site registry CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{srv}.key",
             "-out", f"{srv}.csr", "-subj", f"/CN={REGISTRY_NAME}")
    ext = d / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{REGISTRY_NAME},IP:{address}\nextendedKeyUsage=serverAuth\n"
                   "keyUsage=digitalSignature,keyEncipherment\n")
    _openssl("x509", "-req", "-in", f"{srv}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{srv}.crt", "-extfile", str(ext))
    # a second, unrelated CA: trusting it must not be enough
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             str(d / "other.key"), "-out", str(d / "other.crt"), "-days", "2", "-subj", "/CN=some other CA")
    return {"ca": Path(f"{ca}.crt"), "cert": Path(f"{srv}.crt"), "key": Path(f"{srv}.key"),
            "other_ca": d / "other.crt"}


def push_pause(reg: cluster.Registry, ca: Path, work: Path) -> str:
    """Write the fixture pause image as a skopeo dir: layout and copy it to the TLS registry (verifying it
    with the site CA only); returns the reference hosts pull."""
    built = images.build_image(next(i for i in images.IMAGES if i.ref == PAUSE), 1.0)
    layout = work / "pause-dir"
    layout.mkdir(parents=True)
    (layout / "version").write_text("Directory Transport Version: 1.1\n")
    for digest, data in built.blobs.items():
        (layout / digest.split(":", 1)[1]).write_bytes(data)
    (layout / "manifest.json").write_bytes(built.manifests[-1][2])
    certs = work / "skopeo-certs"
    certs.mkdir()
    shutil.copy(ca, certs / "ca.crt")
    dest = f"{reg.endpoint}/kubernetes/pause-amd64:3.1"
    p = subprocess.run(["skopeo", "copy", "--dest-cert-dir", str(certs), f"dir:{layout}", f"docker://{dest}"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=NO_PROXY_ENV, timeout=120)
    assert p.returncode == 0, f"skopeo copy to {dest}: {p.stderr[-1500:]}"
    return f"{REGISTRY_NAME}:{reg.port}/kubernetes/pause-amd64:3.1"


def rendered_files(tb, work: Path, ca: Path) -> dict:
    """installer.render's files for h1 as the only host (every role) of an inventory with a TLS registry."""
    h = tb.host(1)
    inv_path = work / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump({
        "cluster": {"name": "e2e-docker", "vip": tb.vip, "interface": "eth0", **cluster.e2e_networks(tb)},
        "ssh": {"user": "root", "key": str(tb.key_path)},
        "registry": {"mode": "external", "hostname": REGISTRY_NAME, "address": tb.control_address,
                     "port": cluster.REGISTRY_PORT, "ca_file": str(ca), "project": "kubernetes"},
        "hosts": [{"name": h.name, "address": h.address, "roles": ["master", "etcd", "lb", "node"]}],
    }, sort_keys=False))
    inv = inventory_mod.load(inv_path)
    files = render_host(inv, h.name, pki_files={})
    return {"inv": inv, "files": files, "bip": inv.cluster.docker_bip}


@pytest.fixture(scope="module")
def host(testbed_factory, tmp_path_factory):
    """h1 with docker-ce in place (not started), a TLS registry holding the pause image, the rendered files."""
    tb = testbed_factory.create(1)
    work = tmp_path_factory.mktemp("docker-host")
    pki = make_site_ca(work / "pki", tb.control_address)
    reg = cluster.Registry(work / "registry", tb.control_address, tls_cert=pki["cert"], tls_key=pki["key"]).start()
    try:
        ref = push_pause(reg, pki["ca"], work)
        r = rendered_files(tb, work, pki["ca"])
        m = tb.merged(1)
        # the docker-ce / docker-ce-cli fixture RPMs' payload, as rpm would install it
        for path, script in (("usr/bin/dockerd", "dockerd-18.09.1"), ("usr/bin/docker", "docker-18.09.1")):
            (m / path).write_text(yumrepos.SCRIPTS[script])
            (m / path).chmod(0o755)
        (m / "usr/lib/systemd/system/docker.service").write_text(cluster.DOCKER_UNIT)
        for path in ("/etc/docker/daemon.json", "/etc/systemd/system/docker.service.d/10-k8s.conf", "/etc/hosts"):
            (m / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (m / path.lstrip("/")).write_bytes(r["files"][path].content)
        tb.ssh(1, "systemctl daemon-reload")
        yield {"tb": tb, "ref": ref, "reg": reg, "pki": pki, "ca_path": registry_ca_path(r["inv"]),
               "bip": r["bip"], "daemon_json": json.loads(r["files"]["/etc/docker/daemon.json"].content)}
    finally:
        reg.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_no_docker_runs_before_it_is_installed(testbed_factory):
    tb = testbed_factory.create(1)
    out = tb.ssh(1, "systemctl is-active docker.service docker.socket containerd.service; "
                    "systemctl is-enabled containerd.service; pgrep -c 'dockerd|containerd'; "
                    "test -x /usr/sbin/dockerd && echo has-dockerd", check=False).stdout.split()
    assert out[:3] == ["inactive"] * 3, out
    assert out[3] == "disabled" and out[4] == "0", out
    assert out[5] == "has-dockerd", out
    assert tb.down() == []


def test_docker_starts_with_the_rendered_config(host):
    tb = host["tb"]
    assert "insecure-registries" not in host["daemon_json"]
    assert host["daemon_json"]["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    tb.ssh(1, "systemctl start docker", timeout=90)
    info = json.loads(tb.ssh(1, "docker info --format '{{json .}}'").stdout)
    assert info["Driver"] == "overlay2" and info["CgroupDriver"] == "cgroupfs", info
    assert info["ServerVersion"].startswith("20.10"), info["ServerVersion"]
    assert info["RegistryConfig"]["InsecureRegistryCIDRs"] == ["127.0.0.0/8"], info["RegistryConfig"]
    # the unit's main process is the real daemon the wrapper exec'd, with its own containerd below it
    main = tb.ssh(1, "systemctl show -p MainPID --value docker").stdout.strip()
    assert tb.ssh(1, f"readlink /proc/{main}/exe").stdout.strip() == "/usr/sbin/dockerd"
    assert "containerd" in tb.ssh(1, f"ps -o comm= --ppid {main}").stdout
    addr = tb.ssh(1, "ip -4 -o addr show dev docker0").stdout
    assert f" {host['bip']} " in addr, addr


def test_pull_needs_the_site_ca_and_no_other(host):
    tb, ref, ca_path = host["tb"], host["ref"], host["ca_path"]
    assert ca_path == f"/etc/docker/certs.d/{REGISTRY_NAME}:{cluster.REGISTRY_PORT}/ca.crt"
    p = tb.ssh(1, f"docker pull {ref}", check=False, timeout=90)
    assert p.returncode != 0 and "x509" in p.stderr, p.stderr
    ca_file = tb.merged(1) / ca_path.lstrip("/")
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(host["pki"]["other_ca"].read_bytes())
    p = tb.ssh(1, f"docker pull {ref}", check=False, timeout=90)
    assert p.returncode != 0 and "x509" in p.stderr, p.stderr
    ca_file.write_bytes(host["pki"]["ca"].read_bytes())  # docker reads certs.d per pull: no restart
    tb.ssh(1, f"docker pull {ref}", timeout=90)
    cfg = json.loads(tb.ssh(1, f"docker image inspect {ref}").stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["/pause"] and cfg["Labels"]["fixture.image"] == PAUSE


def test_pause_runs_and_stops_on_sigterm(host):
    tb, ref = host["tb"], host["ref"]
    cid = tb.ssh(1, f"docker run -d --net=none --name pause1 {ref}").stdout.strip()
    state = json.loads(tb.ssh(1, "docker inspect pause1").stdout)[0]["State"]
    assert state["Running"], state
    # the container is a real process on the machine, in this host's own docker cgroups
    mine = f"/{tb.host(1).machine}-docker/docker/{cid}\n"
    procs = [d for d in Path("/proc").iterdir() if d.name.isdigit() and mine in _read(d / "cgroup")]
    assert [_read(d / "cmdline") for d in procs] == ["/pause\0"], procs
    t = time.monotonic()
    tb.ssh(1, "docker stop pause1", timeout=60)
    took = time.monotonic() - t
    state = json.loads(tb.ssh(1, "docker inspect pause1").stdout)[0]["State"]
    assert not state["Running"] and state["ExitCode"] == 0, state  # exit 0: pause's own SIGTERM handler
    assert took < 5, f"docker stop took {took:.1f} s (pause ignored SIGTERM, docker had to SIGKILL it)"


def test_teardown_with_a_running_container_leaves_nothing(host):
    tb, ref = host["tb"], host["ref"]
    tb.ssh(1, f"docker run -d --net=none --name pause2 {ref}")
    cid = json.loads(tb.ssh(1, "docker inspect pause2").stdout)[0]["Id"]
    mine = f"/{tb.host(1).machine}-docker/docker/{cid}\n"
    procs = [d for d in Path("/proc").iterdir() if d.name.isdigit() and mine in _read(d / "cgroup")]
    assert procs, "the container runs on the machine"
    docker_cgroups = [p for p in tb.leftovers() if p.startswith("cgroup ") and "-docker" in p]
    assert docker_cgroups, tb.leftovers()
    assert tb.down() == []
    assert tb.leftovers() == []
    assert not [d for d in Path("/proc").iterdir() if d.name.isdigit() and mine in _read(d / "cgroup")]
