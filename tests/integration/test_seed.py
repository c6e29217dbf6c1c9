"""Seeding a REAL docker-registry (2.8) from an OCI layout, checked with skopeo as an independent client."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from contract.errors import Error
from installer.registry.client import RegistryClient
from installer.registry.harbor import HarborAPI
from installer.registry.seed import push_missing, seeded_refs
from tests.fixtures.harbor import layout as L
from tests.fixtures.harbor.registry import available, start_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs docker-registry, skopeo and htpasswd"),
]

SMALL = 256 * 1024  # small upload limits so the 3 MiB layer goes up in PATCH chunks


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "layout"
    return root, L.build_layout(root)


def client_for(reg, **kwargs):
    return RegistryClient(reg.url, reg.session(), **reg.client_kwargs(), **kwargs)


def base_layer_digest(root):
    """The digest of the layer every test image shares."""
    index = json.loads((root / "index.json").read_text())
    pause = json.loads((root / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return pause["layers"][0]["digest"]


def assert_seeded(reg, root, digests, project):
    """skopeo reads each image back; its manifest bytes hash to the layout's digest."""
    refs = seeded_refs(root, reg.endpoint, project)
    assert set(refs) == set(digests)
    for original, seeded in refs.items():
        raw = reg.skopeo_raw(seeded.split("/", 1)[1])
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digests[original], seeded


def assert_second_run_pushes_nothing(client, root, project, digests):
    t0 = time.monotonic()
    again = push_missing(root, client, project)
    elapsed = time.monotonic() - t0
    assert not again.pushed_anything and again.bytes_pushed == 0
    assert [i.status for i in again.images] == ["present"] * len(digests)
    assert all(i.verified for i in again.images)
    assert again.as_dict()["totals"]["bytes_pushed"] == 0
    assert elapsed < 2.0, elapsed


def test_seed_with_htpasswd_and_tls_chunked(tmp_path, layout):
    root, digests = layout
    with start_registry(tmp_path / "reg", tls=True, auth="htpasswd") as reg:
        client = client_for(reg, monolithic_max=SMALL, chunk_size=SMALL)
        report = push_missing(root, client, "kubernetes", jobs=4)
        assert [i.status for i in report.images] == ["pushed"] * 3 and all(i.verified for i in report.images)
        # the shared base layer went up once and was mounted into the two other repositories
        base = base_layer_digest(root)
        size = (root / "blobs/sha256" / base[7:]).stat().st_size
        assert report.total("blobs_mounted") == 2 and report.total("bytes_mounted") == 2 * size
        assert report.bytes_pushed == sum(
            (root / "blobs/sha256" / d[7:]).stat().st_size for d in {b for img in _blobs(root) for b in img}
        )
        assert_seeded(reg, root, digests, "kubernetes")
        assert (
            reg.skopeo_raw("kubernetes/pause-amd64:3.1")
            == (root / "blobs/sha256" / digests[L.PAUSE][7:]).read_bytes()
        )
        assert_second_run_pushes_nothing(client_for(reg), root, "kubernetes", digests)


def _blobs(root):
    """Every image's config and layer digests (children of an index included)."""
    index = json.loads((root / "index.json").read_text())

    def walk(digest):
        doc = json.loads((root / "blobs/sha256" / digest[7:]).read_text())
        if "manifests" in doc:
            return [b for m in doc["manifests"] for b in walk(m["digest"])]
        return [doc["config"]["digest"]] + [x["digest"] for x in doc["layers"]]

    return [walk(m["digest"]) for m in index["manifests"]]


@pytest.mark.parametrize("api,tls", [("1.4", True), ("2.0", False)])
def test_seed_through_harbor_token_auth(tmp_path, layout, api, tls):
    root, digests = layout
    with start_registry(tmp_path / "reg", tls=tls, auth="token", harbor_api=api) as reg:
        harbor = HarborAPI(
            reg.api_url,
            reg.session(),
            username=reg.username,
            password=reg.password,
            verify=str(reg.ca_file) if tls else True,
        )
        first = harbor.ensure_project("kubernetes", public=True)
        assert first.created and first.api == ("1" if api == "1.4" else "2.0")
        assert not harbor.ensure_project("kubernetes").created
        client = client_for(reg)
        report = push_missing(root, client, "kubernetes", jobs=3)
        assert report.total("blobs_mounted") == 2  # mounts need pull on the source repo: scopes worked
        assert_seeded(reg, root, digests, "kubernetes")
        assert_second_run_pushes_nothing(client_for(reg), root, "kubernetes", digests)


def test_keep_path_naming(tmp_path, layout):
    root, digests = layout
    with start_registry(tmp_path / "reg", tls=False) as reg:
        push_missing(root, client_for(reg), "mirror", naming="keep-path")
        refs = seeded_refs(root, reg.endpoint, "mirror", naming="keep-path")
        assert refs[L.PAUSE] == f"{reg.endpoint}/mirror/k8s.gcr.io/pause-amd64:3.1"
        assert refs[L.COREDNS] == f"{reg.endpoint}/mirror/docker.io/coredns/coredns:1.1.3"
        raw = reg.skopeo_raw("mirror/docker.io/coredns/coredns:1.1.3")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digests[L.COREDNS]


def test_registry_killed_mid_push_then_rerun_completes(tmp_path):
    root = tmp_path / "layout"
    digests = L.build_layout(root, big_layer_size=6 * 1024 * 1024)
    with start_registry(tmp_path / "reg", tls=False) as reg:
        client = client_for(reg, monolithic_max=SMALL, chunk_size=SMALL)
        killed = []

        def kill_after_some_bytes(done, total):
            if done > total // 3 and not killed:
                killed.append(done)
                reg.kill()

        with pytest.raises(Error) as err:
            push_missing(root, client, "kubernetes", jobs=2, progress=kill_after_some_bytes)
        assert killed and "cannot reach the registry" in err.value.message
        reg.start()
        report = push_missing(root, client_for(reg), "kubernetes", jobs=2)
        assert report.total("blobs_present") > 0  # what went through before the crash was kept
        assert all(i.verified for i in report.images)
        assert_seeded(reg, root, digests, "kubernetes")
        assert_second_run_pushes_nothing(client_for(reg), root, "kubernetes", digests)
