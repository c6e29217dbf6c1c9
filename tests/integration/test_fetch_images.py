"""Images against the stand-in registries (docker-registry, open and with Docker-Hub-like bearer tokens)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from bundler import spec as specmod
from bundler.cache import Cache
from bundler.sources import images, oci_layout
from bundler.spec import Image, Mirrors, RegistryMirror
from contract import oci as mediatypes
from contract.errors import Error
from tests.fixtures.harbor import registry as harbor_registry

pytestmark = pytest.mark.integration
SPEC = Path(__file__).resolve().parents[2] / "bundle-spec.yaml"
COREDNS = "docker.io/coredns/coredns:1.1.3"


@pytest.fixture(scope="module")
def spec(upstreams):
    return specmod.load(SPEC, mirrors=upstreams.mirrors_file)


@pytest.fixture(scope="module")
def resolved(spec, session):
    """Every image of the spec (all options), resolved for its default platform."""
    return {img.ref: images.resolve(img, spec.mirrors, session) for img in spec.images}


@pytest.fixture(scope="module")
def fetched(resolved, spec, session, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("image-cache"))
    stats = [images.fetch(a, spec.mirrors, cache, session) for a in resolved.values()]
    return cache, stats


def test_every_image_resolves_to_the_stand_in_digest(resolved, upstreams):
    for ref, art in resolved.items():
        info = upstreams.images[ref]
        want = info["platforms"]["linux/amd64"] if len(info["platforms"]) > 1 else info["digest"]
        assert art.digest == want, ref
        assert art.blobs[0][0] == art.digest and art.size == art.blobs[0][1]


def test_coredns_list_gives_amd64_by_default_and_whole_index_for_two(resolved, spec, session, upstreams):
    info = upstreams.images[COREDNS]
    one = resolved[COREDNS]
    assert one.media_type == mediatypes.DOCKER_MANIFEST and info["digest"] not in [b[0] for b in one.blobs]
    two = images.resolve(Image(ref=COREDNS, platforms=("linux/amd64", "linux/arm64")), spec.mirrors, session)
    assert two.digest == info["digest"] and two.media_type == mediatypes.DOCKER_LIST
    digests = [b[0] for b in two.blobs]
    assert info["platforms"]["linux/amd64"] in digests and info["platforms"]["linux/arm64"] in digests
    assert info["platforms"]["linux/arm"] not in digests


def test_token_registry_works_anonymously(resolved, upstreams):
    stats = upstreams.token_stats()
    assert stats["issued"] >= 1 and stats["scopes"].get("repository:docker.io/coredns/coredns:pull")
    assert resolved[COREDNS].digest  # and the pull went through


def test_private_image_needs_the_mirror_rules_credentials(upstreams, session, monkeypatch):
    ref = "docker.io/acme/internal-tools:1.0"
    anon = Mirrors(registries=(RegistryMirror(**{"from": "docker.io", "to": f"{upstreams.registry_b}/docker.io",
                                                 "insecure": True}),))
    with pytest.raises(Error) as e:
        images.resolve(Image(ref=ref), anon, session)
    assert "denied" in e.value.render() or "refused" in e.value.render()
    monkeypatch.setenv("PULLER_PASSWORD", upstreams.puller_password)
    creds = Mirrors(registries=(RegistryMirror(**{"from": "docker.io", "to": f"{upstreams.registry_b}/docker.io",
                                                  "insecure": True, "username": upstreams.puller_user,
                                                  "password_env": "PULLER_PASSWORD"}),))
    assert images.resolve(Image(ref=ref), creds, requests.Session()).digest == upstreams.images[ref]["digest"]


def test_missing_image_names_the_registry_and_rule(spec, session, upstreams):
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="k8s.gcr.io/no-such-image:1.0"), spec.mirrors, session)
    text = e.value.render()
    assert "k8s.gcr.io/no-such-image:1.0" in text and f"http://{upstreams.registry_a}" in text
    assert f"mirror rule: k8s.gcr.io -> {upstreams.registry_a}/k8s.gcr.io" in text


def test_fetch_stores_each_blob_once_and_verified(fetched, resolved):
    cache, stats = fetched
    all_blobs = [b for a in resolved.values() for b in a.blobs]
    unique = {b[0] for b in all_blobs}
    assert len(unique) < len(all_blobs)  # base layers are shared
    assert sum(s["downloaded_bytes"] for s in stats) == sum({b[0]: b[1] for b in all_blobs}.values())
    assert sum(s["cache_hits"] for s in stats) == len(all_blobs) - len(unique)
    for d in unique:
        assert hashlib.sha256(cache.path(d[7:]).read_bytes()).hexdigest() == d[7:]


class CorruptingProxy:
    """Forwards to a registry, flipping one byte of the blobs named in `corrupt`."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.corrupt = upstream, set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                r = requests.get(f"http://{proxy.upstream}{self.path}", headers=headers, timeout=10)
                body = r.content
                if any(self.path.endswith(f"/blobs/{d}") for d in proxy.corrupt):
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(r.status_code)
                for k in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate"):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_corrupted_blob_is_refused(upstreams, session, tmp_path):
    proxy = CorruptingProxy(upstreams.registry_a)
    try:
        m = Mirrors(registries=(RegistryMirror(**{"from": "k8s.gcr.io", "to": f"{proxy.host}/k8s.gcr.io",
                                                  "insecure": True}),))
        art = images.resolve(Image(ref="k8s.gcr.io/pause-amd64:3.1"), m, session)
        layer = art.blobs[-1][0]
        proxy.corrupt.add(layer)
        cache = Cache(tmp_path / "c")
        with pytest.raises(Error) as e:
            images.fetch(art, m, cache, session)
        assert layer in e.value.render() and "refused" in e.value.render()
        assert not cache.has(layer[7:])
        proxy.corrupt.clear()
        assert images.fetch(art, m, cache, session)["downloaded_bytes"] > 0
    finally:
        proxy.close()


@pytest.mark.skipif(not harbor_registry.available(), reason="needs skopeo and docker-registry")
def test_layout_passes_skopeo_for_every_image(fetched, resolved, spec, session, tmp_path):
    """skopeo 1.9 inspects every image by name and copies it to a real registry with its upstream digest:
    Docker schema 2 manifests, OCI manifests, and (the multi-platform coredns) a Docker manifest list."""
    cache, _ = fetched
    arts = list(resolved.values())
    both = images.resolve(Image(ref=COREDNS, platforms=("linux/amd64", "linux/arm64")), spec.mirrors, session)
    images.fetch(both, spec.mirrors, cache, session)
    # the multi-platform index replaces the single-platform coredns entry
    arts = [a for a in arts if a.ref != COREDNS] + [both]
    assert {a.media_type for a in arts} == {mediatypes.DOCKER_MANIFEST, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_LIST}
    out = tmp_path / "layout"
    written = oci_layout.write_layout(arts, cache, out)
    blobs = [p for p in written if p.parent.name == "sha256"]
    wrappers = sum(a.media_type == mediatypes.DOCKER_MANIFEST for a in arts)  # skopeo 1.9's one-entry indexes
    assert len(blobs) == len({b[0] for a in arts for b in a.blobs}) + wrappers
    assert len(blobs) == len(list((out / "blobs/sha256").iterdir()))
    with harbor_registry.start_registry(tmp_path / "registry", tls=False) as reg:
        for n, a in enumerate(arts):
            name = f"oci:{out}:{oci_layout.ref_name(a.ref)}"
            r = subprocess.run(["skopeo", "inspect", name], capture_output=True, text=True, check=False)
            assert r.returncode == 0, (a.ref, r.stderr)
            assert json.loads(r.stdout)["Architecture"] == "amd64"
            # the platform's manifest as upstream served it: pushed byte for byte under the tag
            platform_digest = a.blobs[1][0] if a.media_type == mediatypes.DOCKER_LIST else a.digest
            r = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", name,
                                f"docker://{reg.endpoint}/t{n}/image:1"], capture_output=True, text=True, check=False)
            assert r.returncode == 0, (a.ref, r.stderr)
            assert "sha256:" + hashlib.sha256(reg.skopeo_raw(f"t{n}/image:1")).hexdigest() == platform_digest, a.ref
