"""Names inside a bundle and sizes for splitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from contract.bundle import layout
from contract.bundle.parts import parse_size
from contract.errors import Error

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path, kind",
    [
        ("binaries/kubelet", "binary"),
        ("rpms/docker-ce-17.03.2.ce-1.el7.centos.x86_64.rpm", "rpm"),
        ("rpms/repodata/repomd.xml", "rpm"),
        ("images/oci-layout", "image"),
        ("images/blobs/sha256/" + "a" * 64, "image"),
        ("manifests/kube-dns.yaml", "manifest"),
        ("installer/k8s_offline-0.1.0-py3-none-any.whl", "installer"),
        ("manifest.json", "meta"),
        ("bundle-lock.yaml", "meta"),
        ("sbom.spdx.json", "meta"),
        ("binaries", "meta"),
    ],
)
def test_kind_of(path: str, kind: str) -> None:
    assert layout.kind_of(path) == kind


def test_helpers_build_paths() -> None:
    assert layout.binary_path("kubelet") == "binaries/kubelet"
    assert layout.rpm_path("repodata/repomd.xml") == "rpms/repodata/repomd.xml"
    assert layout.manifest_path("dns.yaml") == "manifests/dns.yaml"
    assert layout.installer_path("x.whl") == "installer/x.whl"
    assert layout.image_blob("sha256:" + "ab" * 32) == "images/blobs/sha256/" + "ab" * 32
    assert layout.image_blob("cd" * 32) == "images/blobs/sha256/" + "cd" * 32
    assert layout.bundle_filename("k8s", "1.10.3") == "k8s-1.10.3.bundle.tar.zst"
    assert layout.part_filename("b.bundle.tar.zst", 7) == "b.bundle.tar.zst.part007"
    assert layout.parts_index_filename("b.bundle.tar.zst") == "b.bundle.tar.zst.parts.json"
    assert layout.parse_part_filename("b.bundle.tar.zst.part012") == ("b.bundle.tar.zst", 12)
    assert layout.parse_part_filename("b.bundle.tar.zst") is None
    assert layout.bundle_of_index("b.bundle.tar.zst.parts.json") == "b.bundle.tar.zst"


@pytest.mark.parametrize("bad", ["../kubelet", "a/../../b", "/etc/passwd", "", "a//b", "./a", "a\\b"])
def test_helpers_refuse_unsafe_names(bad: str) -> None:
    with pytest.raises(Error):
        layout.binary_path(bad)


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 64, "A" * 64, "../" + "a" * 61])
def test_image_blob_refuses_bad_digest(bad: str) -> None:
    with pytest.raises(Error, match="digest"):
        layout.image_blob(bad)


@pytest.mark.parametrize("name, version", [("k8s", "../x"), ("", "1"), ("a/b", "1"), ("k8s", "1 0")])
def test_bundle_filename_refuses_bad_names(name: str, version: str) -> None:
    with pytest.raises(Error):
        layout.bundle_filename(name, version)


@pytest.mark.parametrize(
    "text, size",
    [
        ("3900M", 3_900_000_000),
        ("3900MiB", 3900 * 2**20),
        ("64KiB", 65536),
        ("64k", 64000),
        ("2G", 2 * 10**9),
        ("1gib", 2**30),
        ("123", 123),
        ("10 MB", 10**7),
        (4096, 4096),
    ],
)
def test_parse_size(text, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_fits_fat32() -> None:
    assert parse_size("3900M") < 4 * 2**30


@pytest.mark.parametrize("bad", ["", "M", "12X", "-1M", "0", "1.5G", "3900 MiBs"])
def test_parse_size_refuses(bad: str) -> None:
    with pytest.raises(Error, match="size"):
        parse_size(bad)


def test_bundle_package_never_imports_bundler() -> None:
    for source in sorted((ROOT / "installer" / "bundle").glob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] != "bundler", f"{source.name} imports {name}"


@pytest.mark.parametrize("upstream, stored", [
    ("etcd-v3.3.1-linux-amd64.tar.gz", "etcd-v3.3.1-linux-amd64.tar"),
    ("cni-plugins-amd64-v0.7.0.tgz", "cni-plugins-amd64-v0.7.0.tar"),
    ("etcd-v*-linux-amd64.tar.gz", "etcd-v*-linux-amd64.tar"),
    ("docker-compose-Linux-x86_64", "docker-compose-Linux-x86_64"),
    ("docker-18.09.1.tgz.sha256", "docker-18.09.1.tgz.sha256"),
])
def test_gzipped_tarballs_are_stored_as_plain_tar(upstream, stored):
    assert layout.stored_binary_name(upstream) == stored


def test_find_binary_prefers_the_stored_name_and_takes_the_downloaded_one_too(tmp_path):
    (tmp_path / "binaries").mkdir()
    assert layout.find_binary(tmp_path, "etcd-v*-linux-amd64.tar.gz") is None
    (tmp_path / "binaries" / "etcd-v3.3.1-linux-amd64.tar.gz").write_bytes(b"old bundle")
    assert layout.find_binary(tmp_path, "etcd-v*-linux-amd64.tar.gz").name == "etcd-v3.3.1-linux-amd64.tar.gz"
    (tmp_path / "binaries" / "etcd-v3.3.1-linux-amd64.tar").write_bytes(b"new bundle")
    (tmp_path / "binaries" / "etcd-v3.2.0-linux-amd64.tar").write_bytes(b"older release")
    assert layout.find_binary(tmp_path, "etcd-v*-linux-amd64.tar.gz").name == "etcd-v3.3.1-linux-amd64.tar"
