"""The release-size profile of the stand-in upstreams: its size table, its Go-code padding, runnable stand-ins."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zlib

import pytest

from tests.fixtures import standins
from tests.fixtures.upstream import content as c
from tests.fixtures.upstream import images, tarballs
from tests.fixtures.upstream import release_size as rs

MB = rs.MB
SERVER = tarballs.k8s_url("v1.10.3", tarballs.K8S_FILES[0])


def _size(src) -> int:
    if src is None:
        return 0
    return src.size if isinstance(src, (rs.Padded, rs.Concat)) else (
        src.stat().st_size if hasattr(src, "stat") else len(src))


def _bytes(src) -> bytes:
    return b"".join(src.chunks()) if isinstance(src, (rs.Padded, rs.Concat)) else src


def test_the_size_table_adds_up_to_the_published_downloads():
    execs = sum(rs.K8S_SERVER_BIN.values())
    assert 0.75e9 < execs < 0.9e9  # kubernetes/server/bin executables
    server = sum(_size(src) for _, src, _ in tarballs.members_of(SERVER, "release"))
    assert 1.1e9 < server < 1.35e9  # with the image tarballs: ~400 MB once gzip'd (Go code gzips to ~35%)
    harbor_images = rs.HARBOR_BASE + sum(rs.HARBOR_IMAGES.values())
    assert 1.7e9 < harbor_images < 2.1e9  # ~ 650-800 MB gzip'd
    # every layer of every image has a real size, and a base layer is counted once however many images share it
    assert set(rs.IMAGE_LAYERS) == set(images.LAYERS)
    dns = [i for i in images.IMAGES if "kube-dns" in i.ref][0]
    assert sum(rs.IMAGE_LAYERS[lid] for lid in dns.layers) == 50_200_000


def test_every_sized_member_is_a_member_of_the_real_layout():
    for url, sizes in rs.RELEASE_MEMBERS.items():
        names = [m[0] for m in tarballs.members_of(url, "release")]
        assert set(sizes) <= set(names), url
        small = {m[0] for m in tarballs.members_of(url, "small")}
        assert small <= set(names), f"{url}: the release profile drops a member"


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown stand-in profile 'huge'; known: small, release"):
        tarballs.members_of(SERVER, "huge")


def test_go_code_is_exact_deterministic_distinct_and_compresses_like_go():
    a = b"".join(rs.go_code("kubelet", 3 * MB))
    assert len(a) == 3 * MB and a == b"".join(rs.go_code("kubelet", 3 * MB))
    b = b"".join(rs.go_code("kube-proxy", 3 * MB))
    assert a[:4096] != b[:4096]
    source = rs.GO_SOURCES[0].read_bytes()[: 3 * MB]
    ratio = len(zlib.compress(a, 6)) / len(a)
    assert abs(ratio - len(zlib.compress(source, 6)) / len(source)) < 0.05 and 0.2 < ratio < 0.5
    # two executables do not compress together better than apart: no shared bytes beyond Go's statistics
    together = len(zlib.compress(a[-30_000:] + b[:30_000], 9))
    assert together > 0.95 * (len(zlib.compress(a[-30_000:], 9)) + len(zlib.compress(b[:30_000], 9)))


def test_a_padded_shell_stand_in_still_runs(tmp_path):
    script = c.kubeadm(standins.K8S_RELEASES["v1.10.3"]).encode()
    exe = rs.pad_script(script, 2 * MB, "kubeadm")
    path = tmp_path / "kubeadm"
    path.write_bytes(_bytes(exe))
    assert path.stat().st_size == 2 * MB
    out = subprocess.run(["/bin/sh", str(path), "version"], capture_output=True, text=True, check=True).stdout
    assert "v1.10.3" in out


def test_a_padded_python_stand_in_runs_as_a_zipapp(tmp_path):
    exe = rs.pad_script(standins.executable("kubectl"), 3 * MB, "kubectl")
    path = tmp_path / "kubectl"
    path.write_bytes(_bytes(exe))
    assert path.stat().st_size == 3 * MB
    out = subprocess.run([sys.executable, str(path), "version", "--client"], capture_output=True, text=True,
                         check=True).stdout
    assert "v1.10.3" in out


def test_the_server_image_tarballs_hold_the_same_executable_bytes():
    ms = {m[0]: m[1] for m in tarballs.members_of(SERVER, "release")}
    b = "kubernetes/server/bin/"
    assert set(rs.K8S_SERVER_BIN) <= {n[len(b):] for n in ms if n.startswith(b)}
    assert ms[b + "kube-scheduler.docker_tag"] == b"v1.10.3\n"
    saved = tarfile.open(fileobj=io.BytesIO(_bytes(ms[b + "kube-scheduler.tar"])))
    layers = [m for m in saved.getmembers() if m.name.endswith("/layer.tar")]
    assert len(layers) == 2 and "manifest.json" in saved.getnames()
    inner = [tarfile.open(fileobj=saved.extractfile(m)) for m in layers]
    found = [t.extractfile(m).read() for t in inner for m in t.getmembers() if m.name.endswith("kube-scheduler")]
    assert found == [_bytes(ms[b + "kube-scheduler"])]
