"""Images: reference mirroring, platform choice, digest checks, token auth, the OCI layout (in-process registry)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bundler.cache import Cache
from bundler.sources import images, oci_layout
from bundler.spec import Image, Mirrors, RegistryMirror, parse_ref
from contract import oci as mediatypes
from contract.errors import Error
from contract.oci import COMPAT_FOR, ORIGINAL_REF, REF_NAME
from contract.registry_transport import Challenge, parse_challenge

# ---------------------------------------------------------------- pure parts


def mirrors(*rules):
    return Mirrors(registries=tuple(RegistryMirror(**{"from": f, "to": t, **kw}) for f, t, kw in rules))


@pytest.mark.parametrize("ref,rules,want", [
    ("busybox", (), ("https", "registry-1.docker.io", "library/busybox")),
    ("coredns/coredns:1.1.3", (), ("https", "registry-1.docker.io", "coredns/coredns")),
    ("k8s.gcr.io/pause-amd64:3.1", (), ("https", "k8s.gcr.io", "pause-amd64")),
    ("localhost:5000/a/b:1", (), ("https", "localhost:5000", "a/b")),
    ("k8s.gcr.io/pause-amd64:3.1", (("k8s.gcr.io", "127.0.0.1:5000/k8s.gcr.io", {"insecure": True}),),
     ("http", "127.0.0.1:5000", "k8s.gcr.io/pause-amd64")),
    ("k8s.gcr.io/pause-amd64:3.1", (("k8s.gcr.io", "mirror.example:443", {}),),
     ("https", "mirror.example:443", "pause-amd64")),
    # the longest prefix wins; a prefix matches whole path components only
    ("docker.io/coredns/coredns:1.1.3", (("docker.io", "a.example/hub", {}),
                                         ("docker.io/coredns", "b.example/dns", {"insecure": True})),
     ("http", "b.example", "dns/coredns")),
    ("docker.io/corednsx/x:1", (("docker.io/coredns", "b.example/dns", {}),),
     ("https", "registry-1.docker.io", "corednsx/x")),
    ("quay.io/coreos/flannel@sha256:" + "a" * 64, (("quay.io", "127.0.0.1:5001", {"insecure": True}),),
     ("http", "127.0.0.1:5001", "coreos/flannel")),
])
def test_endpoint_applies_mirrors(ref, rules, want):
    ep = images.endpoint(parse_ref(ref), mirrors(*rules))
    assert (ep.scheme, ep.host, ep.repository) == want
    assert ep.upstream == parse_ref(ref).name
    assert any(line.startswith("mirror rule: ") for line in ep.describe()) == (ep.rule is not None)


def test_challenge_parsing():
    """The pull side parses challenges with the contract's one parser."""
    c = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"')
    assert c.scheme == "bearer" and c.params["realm"] == "https://auth.docker.io/token"
    assert c.params["service"] == "registry.docker.io"
    assert parse_challenge('Basic realm="Registry Realm"') == Challenge("basic", {"realm": "Registry Realm"})


INDEX = {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_LIST, "manifests": [
    {"digest": "sha256:" + "1" * 64, "size": 1, "mediaType": mediatypes.DOCKER_MANIFEST,
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:" + "2" * 64, "size": 1, "mediaType": mediatypes.DOCKER_MANIFEST,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"digest": "sha256:" + "3" * 64, "size": 1, "mediaType": mediatypes.DOCKER_MANIFEST,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"digest": "sha256:" + "4" * 64, "size": 1, "mediaType": mediatypes.DOCKER_MANIFEST,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
]}


@pytest.mark.parametrize("platform,digit", [("linux/amd64", "1"), ("linux/arm/v7", "3"), ("linux/arm", "2"),
                                            ("linux/arm64", "4"), ("linux/arm64/v8", "4")])
def test_choose_platform(platform, digit):
    assert images.choose(INDEX, platform)["digest"] == "sha256:" + digit * 64


def test_choose_missing_platform_lists_what_exists():
    with pytest.raises(Error) as e:
        images.choose(INDEX, "linux/s390x")
    assert "linux/amd64" in e.value.details[0] and "linux/arm/v7" in e.value.details[0]


def test_manifest_digest_is_over_the_exact_bytes():
    ep = images.endpoint(parse_ref("k8s.gcr.io/pause-amd64:3.1"), Mirrors())
    body = b'{"schemaVersion": 2}'
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    assert images.verify_manifest(body, "3.1", good, "t", ep) == good
    assert images.verify_manifest(body, good, None, "t", ep) == good
    reformatted = b'{"schemaVersion":2}'  # same JSON, other bytes: another digest
    with pytest.raises(Error, match="digest mismatch"):
        images.verify_manifest(reformatted, "3.1", good, "t", ep)
    with pytest.raises(Error, match="digest mismatch"):
        images.verify_manifest(reformatted, good, None, "t", ep)


def test_media_types():
    assert images.media_type_of(json.dumps(INDEX).encode(), None)[0] == mediatypes.DOCKER_LIST
    assert images.media_type_of(b'{"schemaVersion":2,"layers":[]}', mediatypes.OCI_MANIFEST + "; x=y")[0] == \
        mediatypes.OCI_MANIFEST
    with pytest.raises(Error, match="schema 1"):
        images.media_type_of(b'{"schemaVersion":1,"fsLayers":[]}', None)


def test_artifact_round_trip():
    a = images.ImageArtifact("k8s.gcr.io/pause-amd64:3.1", "sha256:" + "a" * 64, mediatypes.DOCKER_MANIFEST, 10,
                             ("linux/amd64",), (("sha256:" + "a" * 64, 10, mediatypes.DOCKER_MANIFEST),))
    assert images.ImageArtifact.from_dict(a.to_dict()) == a
    assert "source" not in a.to_dict()
    d = dict(a.to_dict(), blobs=[{"digest": "sha256:" + "a" * 64, "size": 10, "media_type": "x"}])
    assert images.ImageArtifact.from_dict(d).blobs == (("sha256:" + "a" * 64, 10, "x"),)


# ---------------------------------------------------------------- an in-process registry


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(content: bytes, name: str = "file") -> bytes:
    """A gzip'd tar holding one file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


class FakeRegistry:
    """Registry v2 subset: manifests by tag/digest, blobs; optional bearer-token or basic auth."""

    def __init__(self, auth=None, users=None):
        self.auth, self.users = auth, users or {}
        self.manifests: dict = {}  # (repo, ref) -> (bytes, media type)
        self.blobs: dict = {}
        self.tokens_issued: list = []
        self.requests: list = []
        self.corrupt: set = set()  # digests served with a flipped byte
        self.reset: dict = {}  # digest -> times the body breaks off half-way

    def add_image(self, repo, tag, layers, arch="amd64", oci=False):
        cfg = json.dumps({"architecture": arch, "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.blobs[digest(cfg)] = cfg
        for data in layers:
            self.blobs[digest(data)] = data
        mt = mediatypes.OCI_MANIFEST if oci else mediatypes.DOCKER_MANIFEST
        cfg_mt, layer_mt = (mediatypes.OCI_CONFIG, mediatypes.OCI_LAYER) if oci else \
            (mediatypes.DOCKER_CONFIG, mediatypes.DOCKER_LAYER)
        body = json.dumps({"schemaVersion": 2, "mediaType": mt,
                           "config": {"mediaType": cfg_mt, "size": len(cfg), "digest": digest(cfg)},
                           "layers": [{"mediaType": layer_mt, "size": len(d), "digest": digest(d)}
                                      for d in layers]}, indent=3).encode()
        self.manifests[(repo, digest(body))] = (body, mt)
        if tag:
            self.manifests[(repo, tag)] = (body, mt)
        return body

    def add_index(self, repo, tag, children):
        body = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_LIST, "manifests": [
            {"mediaType": mediatypes.DOCKER_MANIFEST, "size": len(b), "digest": digest(b),
             "platform": {"os": "linux", "architecture": arch}} for arch, b in children]}).encode()
        self.manifests[(repo, tag)] = self.manifests[(repo, digest(body))] = (body, mediatypes.DOCKER_LIST)
        return body

    def handler(reg):  # the registry is the closure; self is the request
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self, repo):
                auth = self.headers.get("Authorization", "")
                if reg.auth is None:
                    return True
                if reg.auth == "basic":
                    ok = auth == "Basic " + base64.b64encode(b"alice:s3cret").decode()
                    if not ok:
                        self._send(401, b"{}", {"WWW-Authenticate": 'Basic realm="reg"'})
                    return ok
                if auth == f"Bearer tok-{repo}":
                    return True
                host = self.headers["Host"]
                self._send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="http://{host}/token",service="reg"'})
                return False

            def do_GET(self):
                url = urlsplit(self.path)
                reg.requests.append(url.path)
                if url.path == "/token":
                    q = parse_qs(url.query)
                    scope = q["scope"][0]
                    reg.tokens_issued.append((scope, self.headers.get("Authorization")))
                    if q.get("service") != ["reg"]:
                        return self._send(400)
                    repo = scope.split(":")[1]
                    return self._send(200, json.dumps({"token": f"tok-{repo}"}).encode())
                if url.path == "/v2/":
                    return self._send(200, b"{}") if reg.auth is None else \
                        self._authorized("") and self._send(200, b"{}")
                path = url.path[len("/v2/"):]
                for kind in ("manifests", "blobs"):
                    if f"/{kind}/" in path:
                        repo, _, ref = path.rpartition(f"/{kind}/")
                        break
                else:
                    return self._send(404)
                if not self._authorized(repo):
                    return None
                if kind == "manifests":
                    if (repo, ref) not in reg.manifests:
                        return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                    body, mt = reg.manifests[(repo, ref)]
                    dg = digest(body)
                    if dg in reg.corrupt:
                        body = body.replace(b"schemaVersion", b"schemaVersioN")
                    return self._send(200, body, {"Content-Type": mt, "Docker-Content-Digest": dg})
                data = reg.blobs.get(ref)
                if data is None:
                    return self._send(404)
                if ref in reg.corrupt:
                    data = bytes([data[0] ^ 1]) + data[1:]
                if reg.reset.get(ref):
                    reg.reset[ref] -= 1
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.close_connection = True
                    return None
                return self._send(200, data, {"Content-Type": "application/octet-stream"})

        return Handler


@pytest.fixture
def registry():
    servers = []

    def start(**kw):
        reg = FakeRegistry(**kw)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), reg.handler())
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        servers.append((httpd, t))
        reg.host = f"127.0.0.1:{httpd.server_port}"
        return reg

    yield start
    for httpd, t in servers:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def mirror_to(reg, frm="k8s.gcr.io", **kw):
    return mirrors((frm, f"{reg.host}/{frm}", {"insecure": True, **kw}))


BASE_LAYER = layer(b"shared base layer" * 100, "base")


def test_resolve_and_fetch_single_manifest(registry, tmp_path):
    reg = registry()
    top = reg.add_image("k8s.gcr.io/pause-amd64", "3.1", [BASE_LAYER, layer(b"pause")])
    m = mirror_to(reg)
    session = requests.Session()
    art = images.resolve(Image(ref="k8s.gcr.io/pause-amd64:3.1"), m, session)
    assert art.digest == digest(top) and art.media_type == mediatypes.DOCKER_MANIFEST and art.size == len(top)
    assert art.blobs[0][0] == digest(top) and len(art.blobs) == 4
    assert not any("/blobs/" in r for r in reg.requests)  # resolve downloads no layer
    cache = Cache(tmp_path / "c")
    events = []
    out = images.fetch(art, m, cache, session, progress=lambda ev, **kw: events.append(ev))
    assert out == {"downloaded_bytes": sum(b[1] for b in art.blobs), "cache_hits": 0}
    assert cache.path(art.digest[7:]).read_bytes() == top
    assert images.fetch(art, m, cache, session) == {"downloaded_bytes": 0, "cache_hits": 4}
    assert "update" in events and events[0] == "begin"


def test_index_gives_amd64_by_default_and_whole_index_for_two(registry, tmp_path):
    reg = registry()
    amd = reg.add_image("docker.io/coredns/coredns", None, [BASE_LAYER, layer(b"amd64")])
    arm = reg.add_image("docker.io/coredns/coredns", None, [BASE_LAYER, layer(b"arm64")], arch="arm64")
    idx = reg.add_index("docker.io/coredns/coredns", "1.1.3", [("amd64", amd), ("arm64", arm)])
    m = mirror_to(reg, "docker.io")
    one = images.resolve(Image(ref="docker.io/coredns/coredns:1.1.3"), m, requests.Session())
    assert one.digest == digest(amd) and one.media_type == mediatypes.DOCKER_MANIFEST
    assert digest(idx) not in [b[0] for b in one.blobs] and digest(arm) not in [b[0] for b in one.blobs]
    two = images.resolve(Image(ref="docker.io/coredns/coredns:1.1.3", platforms=("linux/amd64", "linux/arm64")),
                         m, requests.Session())
    assert two.digest == digest(idx) and two.media_type == mediatypes.DOCKER_LIST
    ds = [b[0] for b in two.blobs]
    assert ds[0] == digest(idx) and digest(amd) in ds and digest(arm) in ds
    assert ds.count(digest(BASE_LAYER)) == 1
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="docker.io/coredns/coredns:1.1.3", platforms=("linux/ppc64le",)), m,
                       requests.Session())
    assert "linux/arm64" in e.value.render()


def test_missing_image_names_registry_and_rule(registry):
    reg = registry()
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="k8s.gcr.io/nope:1.0"), mirror_to(reg), requests.Session())
    text = e.value.render()
    assert "k8s.gcr.io/nope:1.0" in text and f"http://{reg.host}" in text
    assert f"mirror rule: k8s.gcr.io -> {reg.host}/k8s.gcr.io" in text


def test_tampered_blob_and_manifest_are_refused(registry, tmp_path):
    reg = registry()
    lay = layer(b"payload")
    top = reg.add_image("k8s.gcr.io/x", "1", [lay])
    m = mirror_to(reg)
    art = images.resolve(Image(ref="k8s.gcr.io/x:1"), m, requests.Session())
    reg.corrupt.add(digest(lay))
    cache = Cache(tmp_path / "c")
    with pytest.raises(Error) as e:
        images.fetch(art, m, cache, requests.Session())
    assert digest(lay) in e.value.render() and "refused" in e.value.render()
    assert not cache.has(digest(lay)[7:])
    reg.corrupt = {digest(top)}
    with pytest.raises(Error, match="digest mismatch"):
        images.resolve(Image(ref="k8s.gcr.io/x:1"), m, requests.Session())


def test_broken_off_blob_is_retried(registry, tmp_path, monkeypatch):
    reg = registry()
    lay = layer(b"big" * 10000)
    reg.add_image("k8s.gcr.io/x", "1", [lay])
    m = mirror_to(reg)
    session = requests.Session()
    art = images.resolve(Image(ref="k8s.gcr.io/x:1"), m, session)
    images.client_for(images.endpoint(parse_ref("k8s.gcr.io/x:1"), m), session).sleep = lambda s: None
    reg.reset[digest(lay)] = 2
    cache = Cache(tmp_path / "c")
    images.fetch(art, m, cache, session)
    assert cache.has(digest(lay)[7:]) and reg.requests.count(f"/v2/k8s.gcr.io/x/blobs/{digest(lay)}") == 3


def test_bearer_token_flow_caches_tokens_per_scope(registry, tmp_path):
    reg = registry(auth="bearer")
    reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    reg.add_image("k8s.gcr.io/b", "1", [layer(b"b")])
    m = mirror_to(reg)
    session = requests.Session()
    cache = Cache(tmp_path / "c")
    for name in ("a", "b"):
        art = images.resolve(Image(ref=f"k8s.gcr.io/{name}:1"), m, session)
        images.fetch(art, m, cache, session)
    scopes = [s for s, _ in reg.tokens_issued]
    assert scopes == ["repository:k8s.gcr.io/a:pull", "repository:k8s.gcr.io/b:pull"]
    assert all(auth is None for _, auth in reg.tokens_issued)  # anonymous


def test_token_request_carries_basic_credentials(registry, monkeypatch):
    reg = registry(auth="bearer")
    reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    monkeypatch.setenv("REG_PW", "s3cret")
    images.resolve(Image(ref="k8s.gcr.io/a:1"), mirror_to(reg, username="alice", password_env="REG_PW"),
                   requests.Session())
    assert reg.tokens_issued[0][1] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    monkeypatch.delenv("REG_PW")
    with pytest.raises(Error, match="REG_PW"):
        images.resolve(Image(ref="k8s.gcr.io/a:1"), mirror_to(reg, username="alice", password_env="REG_PW"),
                       requests.Session())


def test_basic_auth_registry(registry, monkeypatch):
    reg = registry(auth="basic")
    top = reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    monkeypatch.setenv("REG_PW", "s3cret")
    art = images.resolve(Image(ref="k8s.gcr.io/a:1"), mirror_to(reg, username="alice", password_env="REG_PW"),
                         requests.Session())
    assert art.digest == digest(top)
    with pytest.raises(Error, match="username and password"):
        images.resolve(Image(ref="k8s.gcr.io/a:1"), mirror_to(reg), requests.Session())


# ---------------------------------------------------------------- the layout


def fetched(registry, tmp_path):
    reg = registry()
    reg.add_image("k8s.gcr.io/k8s-dns-kube-dns-amd64", "1.14.10", [BASE_LAYER, layer(b"kube-dns")])
    reg.add_image("k8s.gcr.io/k8s-dns-sidecar-amd64", "1.14.10", [BASE_LAYER, layer(b"sidecar")], oci=True)
    m = mirror_to(reg)
    cache = Cache(tmp_path / "cache")
    arts = []
    for ref in ("k8s.gcr.io/k8s-dns-kube-dns-amd64:1.14.10", "k8s.gcr.io/k8s-dns-sidecar-amd64:1.14.10"):
        arts.append(images.resolve(Image(ref=ref), m, requests.Session()))
        images.fetch(arts[-1], m, cache, requests.Session())
    return arts, cache


def test_layout_entries_hold_each_blob_once(registry, tmp_path):
    arts, cache = fetched(registry, tmp_path)
    entries = oci_layout.layout_entries(arts, cache)
    paths = [e[0] for e in entries]
    assert paths[:2] == ["oci-layout", "index.json"] and len(paths) == len(set(paths))
    assert paths.count(f"blobs/sha256/{digest(BASE_LAYER)[7:]}") == 1
    # every blob once, plus the one-entry index skopeo 1.9 reads the Docker manifest through
    assert len(paths) == 2 + len({b[0] for a in arts for b in a.blobs}) + 1
    for _path, src, size, sha in entries:
        data = src if isinstance(src, bytes) else src.read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    index = json.loads(entries[1][1])
    assert {d["annotations"][REF_NAME] for d in index["manifests"]} == {
        "k8s.gcr.io/k8s-dns-kube-dns-amd64:1.14.10", "k8s.gcr.io/k8s-dns-sidecar-amd64:1.14.10"}
    true = {d["annotations"][REF_NAME]: d for d in index["manifests"] if COMPAT_FOR not in d["annotations"]}
    compat = [d for d in index["manifests"] if COMPAT_FOR in d["annotations"]]
    kube_dns, sidecar = arts
    # every image under its true type and upstream digest, OCI or Docker
    assert true["k8s.gcr.io/k8s-dns-sidecar-amd64:1.14.10"]["mediaType"] == mediatypes.OCI_MANIFEST
    assert true["k8s.gcr.io/k8s-dns-kube-dns-amd64:1.14.10"]["mediaType"] == mediatypes.DOCKER_MANIFEST
    assert {d["digest"] for d in true.values()} == {a.digest for a in arts}
    # the Docker one once more, for skopeo 1.9: a one-entry OCI index naming the upstream manifest
    (wrapper,) = compat
    assert wrapper["mediaType"] == mediatypes.OCI_INDEX and wrapper["annotations"][COMPAT_FOR] == kube_dns.digest
    assert wrapper["annotations"][REF_NAME] == "k8s.gcr.io/k8s-dns-kube-dns-amd64:1.14.10"
    assert index["manifests"].index(true["k8s.gcr.io/k8s-dns-kube-dns-amd64:1.14.10"]) < \
        index["manifests"].index(wrapper)  # the true entry first: newer tools take the first match
    body = dict((p, src) for p, src, _, _ in entries)[f"blobs/sha256/{wrapper['digest'][7:]}"]
    (child,) = json.loads(body)["manifests"]
    assert child == {"mediaType": mediatypes.DOCKER_MANIFEST, "digest": kube_dns.digest, "size": kube_dns.size,
                     "platform": {"architecture": "amd64", "os": "linux"}}
    assert all(d["annotations"][ORIGINAL_REF] in {a.ref for a in arts} for d in index["manifests"])


def test_layout_accepts_locked_images(registry, tmp_path):
    from bundler.lock import LockedImage

    arts, cache = fetched(registry, tmp_path)
    locked = [LockedImage.model_validate(a.to_dict()) for a in arts]
    assert oci_layout.layout_entries(locked, cache) == oci_layout.layout_entries(arts, cache)


def test_layout_refuses_missing_blobs(registry, tmp_path):
    arts, _ = fetched(registry, tmp_path)
    with pytest.raises(Error, match="not in the cache"):
        oci_layout.layout_entries(arts, Cache(tmp_path / "empty"))


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_written_layout_passes_skopeo(registry, tmp_path):
    arts, cache = fetched(registry, tmp_path)
    out = tmp_path / "layout"
    oci_layout.write_layout(arts, cache, out)
    for a in arts:
        name = f"oci:{out}:{oci_layout.ref_name(a.ref)}"
        r = subprocess.run(["skopeo", "inspect", name], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr  # the Docker image too (skopeo 1.9 refused it: "artifact")
        assert json.loads(r.stdout)["Layers"] == [b[0] for b in a.blobs[2:]]
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", name, f"dir:{tmp_path / 'copy'}"],
                       check=True, capture_output=True)
        assert digest((tmp_path / "copy" / "manifest.json").read_bytes()) == a.digest  # byte for byte
        shutil.rmtree(tmp_path / "copy")


# ---------------------------------------------------------------- docker save


def docker_save_tar(path, ref="example.com/app:1.0", layers=(b"one", b"two"), tamper=False, new_style=False):
    """A synthetic `docker save` archive: manifest.json, config <id>.json, <n>/layer.tar."""
    tars = []
    for i, content in enumerate(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo(f"file{i}")
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
        tars.append(buf.getvalue())
    diff_ids = [digest(t) for t in tars]
    if tamper:
        diff_ids[0] = digest(b"something else")
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cfg_name = f"blobs/sha256/{digest(cfg)[7:]}" if new_style else f"{digest(cfg)[7:]}.json"
    names = [f"blobs/sha256/{digest(t)[7:]}" if new_style else f"{i:02d}/layer.tar" for i, t in enumerate(tars)]
    members = {"manifest.json": json.dumps([{"Config": cfg_name, "RepoTags": [ref], "Layers": names}]).encode(),
               cfg_name: cfg, **dict(zip(names, tars))}
    with tarfile.open(path, "w") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return cfg, tars


@pytest.mark.parametrize("new_style", [False, True])
def test_docker_save_conversion(tmp_path, new_style):
    cfg, tars = docker_save_tar(tmp_path / "save.tar", new_style=new_style)
    cache = Cache(tmp_path / "c")
    conv = images.convert_docker_save(tmp_path / "save.tar", "example.com/app:1.0", cache)
    manifest = json.loads(conv.manifest)
    assert manifest["mediaType"] == mediatypes.OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"]["digest"] == digest(cfg)  # the image ID is kept
    assert conv.digest == digest(conv.manifest) and cache.path(conv.digest[7:]).read_bytes() == conv.manifest
    for desc, raw in zip(manifest["layers"], tars):
        assert desc["mediaType"] == mediatypes.OCI_LAYER
        assert gzip.decompress(cache.path(desc["digest"][7:]).read_bytes()) == raw
    # hashing without storing gives the same digests: resolve and fetch agree
    again = images.convert_docker_save(tmp_path / "save.tar", "example.com/app:1.0")
    assert again == conv


def test_docker_save_layer_not_matching_diff_id_is_refused(tmp_path):
    docker_save_tar(tmp_path / "save.tar", tamper=True)
    with pytest.raises(Error, match="diff_id"):
        images.convert_docker_save(tmp_path / "save.tar", "example.com/app:1.0")


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_docker_save_conversion_gives_a_valid_layout(tmp_path):
    docker_save_tar(tmp_path / "save.tar")
    cache = Cache(tmp_path / "c")
    conv = images.convert_docker_save(tmp_path / "save.tar", "example.com/app:1.0", cache)
    art = images.ImageArtifact("example.com/app:1.0", conv.digest, mediatypes.OCI_MANIFEST, len(conv.manifest),
                               ("linux/amd64",), conv.blobs, source="docker")
    oci_layout.write_layout([art], cache, tmp_path / "layout")
    r = subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'layout'}:example.com/app:1.0"],
                       capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["Architecture"] == "amd64"


def test_docker_daemon_unavailable_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="example.com/app:1.0", source="docker"), Mirrors(), requests.Session())
    assert "docker daemon" in e.value.render() and e.value.hint
