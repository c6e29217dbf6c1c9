"""The bundler's OCI layout read by skopeo 1.9 (Debian 12), copied to a REAL docker-registry (2.8):
a Docker schema 2 image, an OCI image and a multi-arch OCI index, each by name with its upstream digest."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from bundler.cache import Cache
from bundler.sources import images, oci_layout
from tests.fixtures.harbor import layout as L
from tests.fixtures.harbor.registry import available, start_registry
from tests.fixtures.upstream import procs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs docker-registry, skopeo and htpasswd"),
]
OCI_IMAGE = "quay.io/example/oci-only:1.0"


def _artifacts(tmp_path: Path):
    """The fixture's images (plus one OCI image) as the bundler has them: artifacts and a filled cache."""
    src = tmp_path / "upstream"
    digests = L.build_layout(src, big_layer_size=64 * 1024)
    w = L.LayoutWriter(src)  # one more image, OCI through and through, in the same blob directory
    oci = w.image([w.layer({"oci": b"only\n"}, L.OCI_LAYER)], oci=True, label="oci")
    digests[OCI_IMAGE] = oci["digest"]
    cache = Cache(tmp_path / "cache")
    for blob in (src / "blobs" / "sha256").iterdir():
        with cache.writer(expected_sha256=blob.name, expected_size=blob.stat().st_size) as out:
            out.write(blob.read_bytes())

    def doc(d):
        return json.loads((src / "blobs" / "sha256" / d[7:]).read_bytes())

    def blobs(d, mt):
        m = doc(d)
        own = [(d, (src / "blobs" / "sha256" / d[7:]).stat().st_size, mt)]
        if "manifests" in m:
            return own + [b for c in m["manifests"] for b in blobs(c["digest"], c["mediaType"])]
        return own + [(x["digest"], x["size"], x["mediaType"]) for x in [m["config"], *m["layers"]]]

    arts = []
    for ref, d in digests.items():
        mt = doc(d)["mediaType"]
        platforms = ("linux/amd64", "linux/arm64") if mt == L.OCI_INDEX else ("linux/amd64",)
        bl = blobs(d, mt)
        arts.append(images.ImageArtifact(ref, d, mt, bl[0][1], platforms, tuple(dict.fromkeys(bl))))
    return arts, cache


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, env=procs.clean_env(), timeout=120,
                          check=False)


def test_every_image_inspects_and_copies_with_its_upstream_digest(tmp_path):
    arts, cache = _artifacts(tmp_path)
    assert {a.media_type for a in arts} == {L.DOCKER_MANIFEST, L.OCI_MANIFEST, L.OCI_INDEX}
    out = tmp_path / "layout"
    oci_layout.write_layout(arts, cache, out)
    with start_registry(tmp_path / "registry", tls=False) as reg:
        for n, a in enumerate(arts):
            name = f"oci:{out}:{oci_layout.ref_name(a.ref)}"
            r = skopeo("inspect", name)
            assert r.returncode == 0, (a.ref, r.stderr)
            info = json.loads(r.stdout)
            assert info["Architecture"] == "amd64" and info["Os"] == "linux"
            if a.media_type != L.DOCKER_MANIFEST:  # skopeo 1.9 names a Docker image's one-entry index instead
                assert info["Digest"] == a.digest
            # a multi-arch index goes over whole (--all); a single image is pushed byte for byte under its tag
            flags = ["--all"] if a.media_type == L.OCI_INDEX else []
            dest = f"t{n}/image:1"
            r = skopeo("copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", *flags, name,
                       f"docker://{reg.endpoint}/{dest}")
            assert r.returncode == 0, (a.ref, r.stderr)
            assert "sha256:" + hashlib.sha256(reg.skopeo_raw(dest)).hexdigest() == a.digest, a.ref
            # and the registry serves it under its true media type
            r = skopeo("inspect", "--tls-verify=false", f"docker://{reg.endpoint}/{dest}")
            assert r.returncode == 0 and json.loads(r.stdout)["Digest"] == a.digest, r.stderr
