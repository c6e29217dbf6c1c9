"""The stand-in upstreams: files in real layouts, HTTP features and faults, registries, yum repos."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict

import pytest
import requests
import urllib3

from tests.conftest import UPSTREAM_CACHE
from tests.fixtures.upstream import Upstreams, images, procs, rpms, solvcheck, tarballs, yumrepos

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SERVER_TGZ = "https://dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64.tar.gz"
ETCD_TGZ = "https://github.com/coreos/etcd/releases/download/v3.3.1/etcd-v3.3.1-linux-amd64.tar.gz"
ENV = dict(os.environ, **procs.NO_PROXY_ENV)


@pytest.fixture(scope="module")
def http() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    """Each test starts and ends without pending faults."""
    yield
    if "upstreams" in request.fixturenames:
        request.getfixturevalue("upstreams").clear_faults()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------
# HTTP mirror: files

def test_mirrors_file_maps_every_upstream_with_the_projects_parser(upstreams: Upstreams) -> None:
    from bundler.spec import load_mirrors

    m = load_mirrors(upstreams.mirrors_file)
    for url in list(upstreams.files) + list(rpms.REPOS.values()):
        got, rule = m.url_for(url)
        assert rule is not None and got == upstreams.url(url)
    name, rule = m.registry_for("k8s.gcr.io/pause-amd64")
    assert (name, rule.insecure) == (f"{upstreams.registry_a}/k8s.gcr.io/pause-amd64", True)
    assert m.registry_for("docker.io/coredns/coredns")[0] == f"{upstreams.registry_b}/docker.io/coredns/coredns"
    assert m.registry_for("quay.io/coreos/flannel")[0].startswith(upstreams.registry_a + "/quay.io/")


@pytest.mark.parametrize("url", sorted(tarballs.TARBALLS))
def test_tarball_downloads_with_real_layout(upstreams: Upstreams, http, url: str) -> None:
    r = http.get(upstreams.url(url), timeout=30)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(r.content) == upstreams.files[url]["size"]
    assert sha(r.content) == upstreams.files[url]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
        names = [m.name + ("/" if m.isdir() else "") for m in t.getmembers()]
        assert all(m.uid == 0 and m.mtime == tarballs.MTIME for m in t.getmembers())
    assert names == tarballs.expected_members(url)


def test_expected_members_are_the_real_ones() -> None:
    server = tarballs.expected_members(SERVER_TGZ)
    for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
              "kubeadm", "cloud-controller-manager"):
        assert f"kubernetes/server/bin/{b}" in server
    assert {"kubernetes/addons/", "kubernetes/LICENSES", "kubernetes/kubernetes-src.tar.gz"} <= set(server)
    cni = set(tarballs.expected_members(
        "https://github.com/containernetworking/plugins/releases/download/v0.7.0/cni-plugins-amd64-v0.7.0.tgz"))
    assert {"./bridge", "./host-local", "./loopback", "./portmap", "./flannel"} <= cni
    harbor = set(tarballs.expected_members(
        "https://storage.googleapis.com/harbor-releases/release-1.4.0/harbor-offline-installer-v1.4.0.tgz"))
    assert {f"harbor/{f}" for f in ("install.sh", "prepare", "harbor.cfg", "docker-compose.yml",
                                    "harbor.v1.4.0.tar.gz", "LICENSE", "NOTICE")} <= harbor
    assert set(tarballs.expected_members(
        "https://github.com/coreos/flannel/releases/download/v0.10.0/flannel-v0.10.0-linux-amd64.tar.gz")) == \
        {"flanneld", "mk-docker-opts.sh", "README.md"}


def test_etcd_carries_the_real_binaries_and_harbor_a_default_cfg(upstreams: Upstreams) -> None:
    with tarfile.open(upstreams.files[ETCD_TGZ]["path"]) as t:
        assert t.extractfile("etcd-v3.3.1-linux-amd64/etcd").read() == Path("/usr/bin/etcd").read_bytes()
    harbor = next(u for u in upstreams.files if u.endswith("harbor-offline-installer-v1.4.0.tgz"))
    with tarfile.open(upstreams.files[harbor]["path"]) as t:
        cfg = t.extractfile("harbor/harbor.cfg").read().decode()
    for line in ("hostname = reg.mydomain.com", "ui_url_protocol = http", "harbor_admin_password = Harbor12345",
                 "ssl_cert = /data/cert/server.crt", "ssl_cert_key = /data/cert/server.key"):
        assert line in cfg.splitlines()


def test_checksum_files_match(upstreams: Upstreams, http) -> None:
    for url in ("https://dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64.tar.gz",
                "https://dl.k8s.io/v1.10.3/kubernetes-client-linux-amd64.tar.gz"):
        assert http.get(upstreams.url(url + ".sha256"), timeout=5).text == upstreams.files[url]["sha256"]
    sums = http.get(upstreams.url(ETCD_TGZ.rsplit("/", 1)[0] + "/SHA256SUMS"), timeout=5).text
    assert f"{upstreams.files[ETCD_TGZ]['sha256']}  etcd-v3.3.1-linux-amd64.tar.gz\n" in sums


def test_docker_compose_is_an_executable_standin(upstreams: Upstreams, tmp_path: Path, http) -> None:
    url = "https://github.com/docker/compose/releases/download/1.18.0/docker-compose-Linux-x86_64"
    f = tmp_path / "docker-compose"
    f.write_bytes(http.get(upstreams.url(url), timeout=5).content)
    f.chmod(0o755)
    assert "1.18.0" in subprocess.run([str(f), "version"], capture_output=True, text=True, check=True).stdout
    for args in (["-f", "x.yml", "up", "-d"], ["ps"], ["down"]):
        subprocess.run([str(f), *args], capture_output=True, check=True)


def test_tarballs_are_deterministic() -> None:
    small = "https://dl.k8s.io/v1.10.3/kubernetes-client-linux-amd64.tar.gz"
    a = tarballs.tar_gz(tarballs.TARBALLS[small]())
    assert a == tarballs.tar_gz(tarballs.TARBALLS[small]())


# ---------------------------------------------------------------------------------------------------
# HTTP mirror: protocol features, faults, stats

def test_head_range_and_errors(upstreams: Upstreams, http) -> None:
    url = upstreams.url(SERVER_TGZ)
    data = Path(upstreams.files[SERVER_TGZ]["path"]).read_bytes()
    size = len(data)
    h = http.head(url, timeout=5)
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == size and h.content == b""
    assert h.headers["Accept-Ranges"] == "bytes"
    r = http.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{size}")
    r = http.get(url, headers={"Range": "bytes=100-"}, timeout=5)
    assert (r.status_code, r.content) == (206, data[100:])
    assert int(r.headers["Content-Length"]) == size - 100
    r = http.get(url, headers={"Range": "bytes=-7"}, timeout=5)
    assert (r.status_code, r.content) == (206, data[-7:])
    r = http.get(url, headers={"Range": f"bytes={size}-"}, timeout=5)
    assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{size}")
    assert http.get(upstreams.url("https://dl.k8s.io/v1.10.3/nope.tar.gz"), timeout=5).status_code == 404
    assert http.get(upstreams.http_url + "/dl.k8s.io/../etc/passwd", timeout=5).status_code == 404


def test_reset_then_resume_fetches_only_the_rest(upstreams: Upstreams, http) -> None:
    url = upstreams.url(SERVER_TGZ)
    data = Path(upstreams.files[SERVER_TGZ]["path"]).read_bytes()
    upstreams.reset_stats()
    upstreams.fault(SERVER_TGZ, "reset", after=300)
    got = b""
    with pytest.raises((requests.exceptions.RequestException, urllib3.exceptions.ProtocolError)), \
            http.get(url, stream=True, timeout=5) as r:
        for chunk in r.raw.stream(64, decode_content=False):
            got += chunk
    assert got == data[:300]
    r = http.get(url, headers={"Range": f"bytes={len(got)}-"}, timeout=5)
    assert r.status_code == 206 and got + r.content == data
    st = upstreams.stats(SERVER_TGZ)
    assert st["get"] == 2 and st["bytes"] == len(data)  # 300 before the reset + the rest, nothing twice
    assert st["ranges"] == [f"bytes={len(got)}-"] and st["statuses"] == {"200": 1, "206": 1}


def test_status_fault_applies_times_then_clears(upstreams: Upstreams, http) -> None:
    url = upstreams.url(SERVER_TGZ + ".sha256")
    upstreams.fault(url, "status", times=2, code=503, retry_after=1)
    r = http.get(url, timeout=5)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert http.head(url, timeout=5).status_code == 200  # HEAD does not consume faults
    assert http.get(url, timeout=5).status_code == 503
    assert http.get(url, timeout=5).status_code == 200
    upstreams.fault(url, "status", times=5, code=500)
    upstreams.clear_faults()
    assert http.get(url, timeout=5).status_code == 200


def test_slow_and_wrong_faults(upstreams: Upstreams, http) -> None:
    client = "https://dl.k8s.io/v1.10.3/kubernetes-client-linux-amd64.tar.gz"
    data = Path(upstreams.files[client]["path"]).read_bytes()
    upstreams.fault(client, "slow", delay=0.05, chunk=max(1, len(data) // 4))
    t0 = time.monotonic()
    assert http.get(upstreams.url(client), timeout=10).content == data
    assert time.monotonic() - t0 >= 0.15
    upstreams.fault(client, "wrong")
    bad = http.get(upstreams.url(client), timeout=5).content
    assert len(bad) == len(data) and bad != data
    assert http.get(upstreams.url(client), timeout=5).content == data


def test_fault_endpoint_validates(upstreams: Upstreams, http) -> None:
    r = http.post(upstreams.http_url + "/_faults", json={"path": "/x", "kind": "explode"}, timeout=5)
    assert r.status_code == 400
    http.post(upstreams.http_url + "/_faults", json=[{"path": "/github.com/*", "kind": "status", "code": 502}],
              timeout=5).raise_for_status()
    assert http.get(upstreams.url(ETCD_TGZ.rsplit("/", 1)[0] + "/SHA256SUMS"), timeout=5).status_code == 502
    assert http.delete(upstreams.http_url + "/_faults", timeout=5).json() == {"ok": True}


# ---------------------------------------------------------------------------------------------------
# Registries

def skopeo_inspect(ref: str, *extra: str, raw: bool = False) -> subprocess.CompletedProcess:
    cmd = ["skopeo", "inspect", "--tls-verify=false", *extra] + (["--raw"] if raw else []) + [f"docker://{ref}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=ENV, check=False)


def test_skopeo_sees_the_exported_digest(upstreams: Upstreams) -> None:
    ref = "k8s.gcr.io/pause-amd64:3.1"
    r = skopeo_inspect(upstreams.image(ref))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == upstreams.image_digests[ref]


def test_every_image_is_served_by_digest_with_shared_layers(upstreams: Upstreams, http) -> None:
    accept = ", ".join([images.DOCKER_MANIFEST, images.DOCKER_LIST, images.OCI_MANIFEST])
    layers_seen: Dict[str, int] = {}
    for ref, info in upstreams.images.items():
        if info["registry"] != "A":
            continue
        name, tag = images.split_ref(ref)
        r = http.get(f"http://{upstreams.registry_a}/v2/{name}/manifests/{tag}", headers={"Accept": accept},
                     timeout=5)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == info["digest"]
        assert "sha256:" + sha(r.content) == info["digest"]
        man = r.json()
        assert man["mediaType"] == info["media_type"]
        for layer in man["layers"]:
            layers_seen[layer["digest"]] = layers_seen.get(layer["digest"], 0) + 1
    assert upstreams.images["k8s.gcr.io/metrics-server-amd64:v0.2.1"]["media_type"] == images.OCI_MANIFEST
    assert max(layers_seen.values()) >= 5  # the base layer is shared


def test_registry_b_needs_a_token(upstreams: Upstreams, http) -> None:
    r = http.get(f"http://{upstreams.registry_b}/v2/", timeout=5)
    assert r.status_code == 401
    chal = r.headers["Www-Authenticate"]
    assert chal.startswith("Bearer ") and f'realm="{upstreams.token_url}"' in chal
    assert 'service="registry.docker.io"' in chal
    man = f"http://{upstreams.registry_b}/v2/docker.io/coredns/coredns/manifests/1.1.3"
    accept = {"Accept": images.DOCKER_LIST}
    assert http.get(man, headers=accept, timeout=5).status_code == 401
    tok = http.get(upstreams.token_url, params={"service": "registry.docker.io",
                                                "scope": "repository:docker.io/coredns/coredns:pull"},
                   timeout=5).json()["token"]
    r = http.get(man, headers=dict(accept, Authorization=f"Bearer {tok}"), timeout=5)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == \
        upstreams.image_digests["docker.io/coredns/coredns:1.1.3"]
    plats = {(m["platform"]["os"], m["platform"]["architecture"]) for m in r.json()["manifests"]}
    assert plats == {("linux", "amd64"), ("linux", "arm64"), ("linux", "arm")}
    assert upstreams.token_stats()["issued"] >= 1


def test_private_repository_needs_the_puller(upstreams: Upstreams, http) -> None:
    ref = upstreams.image("docker.io/acme/internal-tools:1.0")
    assert skopeo_inspect(ref).returncode != 0
    r = skopeo_inspect(ref, "--creds", f"{upstreams.puller_user}:{upstreams.puller_password}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == upstreams.image_digests["docker.io/acme/internal-tools:1.0"]
    bad = http.get(upstreams.token_url, params={"scope": "repository:docker.io/acme/internal-tools:pull"},
                   auth=(upstreams.puller_user, "wrong"), timeout=5)
    assert bad.status_code == 401
    assert skopeo_inspect(upstreams.image("docker.io/coredns/coredns:1.1.3")).returncode == 0


# ---------------------------------------------------------------------------------------------------
# yum repositories

def test_repodata_lists_the_table(upstreams: Upstreams, http) -> None:
    for repo, d in upstreams.repo_dirs.items():
        assert yumrepos.list_packages(d) == sorted(p.nvra for p in rpms.repo_packages(repo))
        repomd = http.get(upstreams.repos[repo] + "repodata/repomd.xml", timeout=5)
        assert repomd.status_code == 200
        assert 'type="primary_db"' in repomd.text and 'type="primary"' in repomd.text
        href = yumrepos.primary_xml(d).relative_to(d).as_posix()
        primary = gzip.decompress(http.get(upstreams.repos[repo] + href, timeout=5).content).decode()
        if repo == "base":
            assert "<file>/usr/sbin/iptables</file>" in primary  # file requires must be resolvable
            assert "<file>/usr/sbin/semanage</file>" in primary


def test_rpms_are_yum3_readable_and_carry_real_binaries(upstreams: Upstreams) -> None:
    pkgs = upstreams.repo_dirs["base"] / "Packages"
    haproxy = pkgs / next(p.filename for p in rpms.PACKAGES if p.name == "haproxy")
    q = subprocess.run(["rpm", "-qp", "--qf", "%{PAYLOADCOMPRESSOR} %{SIZE}\n", str(haproxy)],
                       capture_output=True, text=True, check=True).stdout.split()
    assert q[0] == "gzip" and int(q[1]) >= Path("/usr/sbin/haproxy").stat().st_size
    ce = upstreams.repo_dirs["docker-ce-stable"] / "Packages" / "docker-ce-18.09.1-3.el7.x86_64.rpm"
    deps = subprocess.run(["rpm", "-qp", "--requires", "--obsoletes", "--qf", "%{EPOCH}\n", str(ce)],
                          capture_output=True, text=True, check=True).stdout
    assert "/usr/sbin/iptables" in deps and "docker-engine-selinux" in deps and deps.endswith("\n3\n")


def test_expected_closure_is_consistent() -> None:
    nvras = {p.nvra for p in rpms.PACKAGES}
    assert rpms.EXPECTED_CLOSURE <= nvras and rpms.MUST_NOT_NVRAS <= nvras
    assert rpms.violations(rpms.EXPECTED_CLOSURE) == []
    assert set(rpms.REQUEST) <= {n.rsplit("-", 2)[0] for n in rpms.EXPECTED_CLOSURE}
    assert len(rpms.INSTALLED) == len(rpms.BASE)


def test_libsolv_agrees_with_expected_closure(upstreams: Upstreams) -> None:
    got = solvcheck.solve(upstreams.repo_dirs)
    assert got == rpms.EXPECTED_CLOSURE, (sorted(got - rpms.EXPECTED_CLOSURE), sorted(rpms.EXPECTED_CLOSURE - got))
    # the pins matter: unpinned, libsolv takes 18.09.2
    unpinned = solvcheck.solve(upstreams.repo_dirs, dict(rpms.REQUEST, **{"docker-ce": None, "docker-ce-cli": None}))
    assert "docker-ce-18.09.2-3.el7.x86_64" in unpinned and "docker-ce-cli-18.09.2-3.el7.x86_64" in unpinned


# ---------------------------------------------------------------------------------------------------
# Lifecycle through the command line

def test_cli_up_is_cached_and_down_stops_everything(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tests.fixtures.upstream"]
    args = ["--dir", str(run), "--cache", str(UPSTREAM_CACHE)]
    try:
        subprocess.run(cmd + ["up"] + args, cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=600)
        state = json.loads((run / "state.json").read_text())
        pids = list(state["pids"].values())
        assert len(pids) == 4 and all(procs.alive(p) for p in pids)
        assert (run / "mirrors.yaml").read_text().count("127.0.0.1:") == 8
        t0 = time.monotonic()
        subprocess.run(cmd + ["up"] + args, cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=60)
        assert time.monotonic() - t0 < 10
        assert json.loads((run / "state.json").read_text())["pids"] == state["pids"]  # reused, not restarted
        r = requests.Session()
        r.trust_env = False
        assert r.get(f"{state['http_url']}/_health", timeout=5).status_code == 200
    finally:
        subprocess.run(cmd + ["down", "--dir", str(run)], cwd=ROOT, env=ENV, check=True, timeout=60)
    # Orphaned servers are reaped by init; a zombie entry is already dead (alive() treats Z as gone).
    assert not any(procs.alive(p) for p in pids)
    out = subprocess.run(cmd + ["down", "--dir", str(run)], cwd=ROOT, env=ENV, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert "stopped 0" in out
