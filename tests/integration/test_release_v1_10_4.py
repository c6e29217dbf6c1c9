"""The second stand-in Kubernetes release: a bundle built from the stand-in upstreams with the v1.10.4 spec says
1.10.4 in its signed manifest, its stand-ins report v1.10.4, and the upgrade policy takes it over a 1.10.3 record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bundler import build
from bundler.cache import Cache
from contract import bundle as fmt
from contract.bundle import layout
from installer import versions

pytestmark = pytest.mark.integration
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SERVER = "kubernetes-server-linux-amd64.tar.gz"


@pytest.fixture(scope="module")
def built(upstreams, tmp_path_factory):
    """The v1.10.4 bundle (no static installer, wheels for this Python only: what this test needs)."""
    d = tmp_path_factory.mktemp("build-v1.10.4")
    spec = d / "bundle-spec.yaml"  # a directory of its own: the lock is written beside the spec
    shutil.copyfile(upstreams.spec_for("v1.10.4"), spec)
    fmt.generate_keypair(d / "keys")
    s = build.run_build(spec, upstreams.mirrors_file, d / "keys" / "bundle.key", d / "dist", Cache(d / "cache"),
                        pythons=[PY], include_static=False, progress=None)
    return {"dir": d, "summary": s, "pub": fmt.load_public_key(d / "keys" / "bundle.pub")}


def test_the_manifest_says_1_10_4(built):
    s, pub = built["summary"], built["pub"]
    report = fmt.verify_bundle(s.bundle, pub)
    assert (report.name, report.version) == ("k8s", "1.10.4")
    manifest, _, _ = fmt.read_manifest(s.bundle, pub)
    assert manifest.versions()["binary/kubernetes-server"] == "1.10.4"
    assert manifest.versions()["binary/kubernetes-client"] == "1.10.4"
    assert manifest.versions()["binary/etcd"] == "3.3.1"  # everything else as in the default release
    assert versions.component_versions(manifest.components)["kubernetes"] == "1.10.4"
    d = versions.decide({"kubernetes": "1.10.3"}, manifest.components, Path("applied.json"))
    assert (d.current, d.target, d.same) == ("1.10.3", "1.10.4", False)


def test_its_standins_report_v1_10_4(built, tmp_path):
    s, pub = built["summary"], built["pub"]
    fmt.unpack_bundle(s.bundle, pub, tmp_path / "unpacked")
    server = layout.find_binary(tmp_path / "unpacked", SERVER)
    assert server is not None
    with tarfile.open(server) as t:
        names = t.getnames()
        assert "kubernetes/server/bin/kube-apiserver" in names  # the real release layout
        t.extractall(tmp_path / "x", members=[m for m in t.getmembers() if m.name.startswith("kubernetes/server/bin/")])
    bin_dir = tmp_path / "x" / "kubernetes" / "server" / "bin"

    def run(*args):
        return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=60)

    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
        r = run(name, "--version")
        assert (r.returncode, r.stdout) == (0, "Kubernetes v1.10.4\n"), (name, r.stderr)
    info = json.loads(run("kubectl", "version", "--client", "-o", "json").stdout)["clientVersion"]
    assert (info["gitVersion"], info["major"], info["minor"]) == ("v1.10.4", "1", "10")  # what /version serves
    assert info["gitCommit"] == "5ca598b4ba5abb89bb773071ce452e33fb66339d"
    assert "GitVersion:\"v1.10.4\"" in run("kubeadm", "version").stdout
