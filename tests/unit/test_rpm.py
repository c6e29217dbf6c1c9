"""RPM closure: version pins, base handling, solver problem messages, downloads (hand-written repodata)."""

from __future__ import annotations

import gzip
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bundler.cache import Cache
from bundler.sources import rpm
from bundler.spec import Mirrors, Package, Repo, Rpms, UrlMirror
from contract.errors import Error

pytest.importorskip("solv")


# ---------------------------------------------------------------- a fake HTTP session


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status_code = status
        self.content = body

    def iter_content(self, n):
        for i in range(0, len(self.content), n):
            yield self.content[i:i + n]

    def close(self):
        pass


class FakeSession:
    """Serves a dict of URL -> bytes; records every URL asked."""

    def __init__(self, files: dict) -> None:
        self.files = files
        self.asked: list = []

    def get(self, url, stream=False, timeout=None):
        self.asked.append(url)
        if url in self.files:
            return FakeResponse(200, self.files[url])
        return FakeResponse(404)


# ---------------------------------------------------------------- hand-written repositories


def pkg(name, ver, rel="1.el7", arch="x86_64", epoch=0, requires=(), provides=(), files=(), body=None):
    """A package entry for primary.xml; requires are 'name' or (name, flags, ver, rel)."""
    body = body if body is not None else f"{name}-{ver}-{rel}".encode()

    def entry(d):
        if isinstance(d, str):
            return f'<rpm:entry name="{d}"/>'
        n, flags, v, r = d
        return f'<rpm:entry name="{n}" flags="{flags}" epoch="0" ver="{v}" rel="{r}"/>'

    provs = [(name, "EQ", ver, rel)] + list(provides)
    return {
        "name": name, "arch": arch, "body": body,
        "href": f"Packages/{name}-{ver}-{rel}.{arch}.rpm",
        "xml": f"""<package type="rpm">
  <name>{name}</name><arch>{arch}</arch><version epoch="{epoch}" ver="{ver}" rel="{rel}"/>
  <checksum type="sha256" pkgid="YES">{hashlib.sha256(body).hexdigest()}</checksum>
  <location href="Packages/{name}-{ver}-{rel}.{arch}.rpm"/>
  <size package="{len(body)}" installed="1" archive="1"/>
  <format>
    <rpm:vendor>CentOS</rpm:vendor>
    <rpm:provides>{''.join(entry(p) for p in provs)}</rpm:provides>
    <rpm:requires>{''.join(entry(r) for r in requires)}</rpm:requires>
    {''.join(f'<file>{f}</file>' for f in files)}
  </format>
</package>""",
    }


def publish(files: dict, baseurl: str, pkgs: list) -> None:
    """Add a repo's repomd.xml, primary.xml.gz and package bodies to a fake server's files."""
    primary = gzip.compress((
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<metadata xmlns="http://linux.duke.edu/metadata/common" '
        f'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{len(pkgs)}">'
        + "".join(p["xml"] for p in pkgs) + "</metadata>").encode(), mtime=0)
    href = f"repodata/{hashlib.sha256(primary).hexdigest()}-primary.xml.gz"
    files[baseurl + href] = primary
    files[baseurl + "repodata/repomd.xml"] = f"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">{hashlib.sha256(primary).hexdigest()}</checksum>
    <location href="{href}"/>
  </data>
</repomd>""".encode()
    for p in pkgs:
        files[baseurl + p["href"]] = p["body"]


BASE = "http://centos.example/7/os/x86_64/"
UPDATES = "http://centos.example/7/updates/x86_64/"
DOCKER = "https://docker.example/centos/7/x86_64/stable/"


def world():
    """Three repos: an OS with glibc 100, updates with glibc 300, docker with two docker-ce versions."""
    files: dict = {}
    publish(files, BASE, [
        pkg("glibc", "2.17", "100"),
        pkg("glibc", "2.17", "100", arch="i686"),
        pkg("iptables", "1.4.21", "1.el7", files=["/usr/sbin/iptables"]),
        pkg("bash", "4.2", "1.el7"),
        pkg("libseccomp", "2.3.1", "1.el7", requires=[("glibc", "GE", "2.17", "100")]),
        pkg("app", "1.0", "1.el7", requires=["libseccomp", ("glibc", "GE", "2.17", "200")]),
        pkg("needs-missing", "1.0", "1.el7", requires=["libmissing.so.1()(64bit)"]),
    ])
    publish(files, UPDATES, [
        pkg("glibc", "2.17", "300"),
        pkg("ipset", "7.1", "1.el7", requires=["/usr/sbin/iptables"]),
    ])
    publish(files, DOCKER, [
        pkg("docker-ce", "18.09.1", "3.el7", epoch=3, requires=["containerd.io", "/usr/sbin/iptables"]),
        pkg("docker-ce", "18.09.2", "3.el7", epoch=3, requires=["containerd.io", "/usr/sbin/iptables"]),
        pkg("containerd.io", "1.2.2", "3.3.el7"),
        pkg("containerd.io", "1.2.0", "3.el7"),
        pkg("container-selinux", "2.68", "1.el7", arch="noarch"),
    ])
    return files


class FakeSpec:
    def __init__(self, packages, base=("glibc", "bash", "iptables"), mirrors=None):
        self.rpms = Rpms(repos=(Repo(name="base", baseurl=BASE), Repo(name="updates", baseurl=UPDATES),
                                Repo(name="docker-ce-stable", baseurl=DOCKER)),
                         base=tuple(base), packages=tuple(packages))
        self.mirrors = mirrors or Mirrors()

    def selected_packages(self):
        return list(self.rpms.packages)


def resolve(*packages, **kw):
    files = world()
    return rpm.resolve(FakeSpec([Package(**p) if isinstance(p, dict) else Package(name=p) for p in packages],
                                **kw), FakeSession(files))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("pin,evr,ok", [
    ("18.09.1", "3:18.09.1-3.el7", True),
    ("18.09.1", "3:18.09.2-3.el7", False),
    ("18.09.1-3.el7", "3:18.09.1-3.el7", True),
    ("18.09.1-2.el7", "3:18.09.1-3.el7", False),
    ("3:18.09.1", "3:18.09.1-3.el7", True),
    ("2:18.09.1", "3:18.09.1-3.el7", False),
    ("18.09", "3:18.09.1-3.el7", False),
    ("1.0", "1.0-1.el7", True),
])
def test_pin_matches(pin, evr, ok):
    assert rpm.pin_matches(pin, evr) is ok


def test_closure_takes_updates_over_base_and_leaves_base_out():
    got = {a.nevra: a for a in resolve("app")}
    assert set(got) == {"app-1.0-1.el7.x86_64", "libseccomp-2.3.1-1.el7.x86_64", "glibc-2.17-300.x86_64"}
    g = got["glibc-2.17-300.x86_64"]
    assert g.repo == "updates" and g.url == UPDATES + "Packages/glibc-2.17-300.x86_64.rpm"
    assert g.sha256 == hashlib.sha256(b"glibc-2.17-300").hexdigest() and g.size == len(b"glibc-2.17-300")


def test_file_requires_resolve_against_installed_base():
    assert [a.nevra for a in resolve("ipset")] == ["ipset-7.1-1.el7.x86_64"]


def test_pin_wins_over_newer_and_unpinned_takes_best():
    got = [a.nevra for a in resolve({"name": "docker-ce", "version": "18.09.1"})]
    assert got == ["containerd.io-1.2.2-3.3.el7.x86_64", "docker-ce-3:18.09.1-3.el7.x86_64"]
    assert "docker-ce-3:18.09.2-3.el7.x86_64" in [a.nevra for a in resolve("docker-ce")]


def test_noarch_and_epoch_in_artifact():
    (a,) = resolve("container-selinux")
    assert (a.arch, a.epoch, a.filename) == ("noarch", 0, "container-selinux-2.68-1.el7.noarch.rpm")
    (d, _) = sorted(resolve({"name": "docker-ce", "version": "3:18.09.1-3.el7"}), key=lambda x: x.name != "docker-ce")
    assert d.epoch == 3 and d.filename == "docker-ce-18.09.1-3.el7.x86_64.rpm"
    assert rpm.RpmArtifact.from_dict(d.to_dict()) == d


def test_missing_capability_names_requirer_and_capability():
    with pytest.raises(Error) as e:
        resolve("needs-missing")
    text = e.value.render()
    assert "needs-missing-1.0-1.el7.x86_64 requires libmissing.so.1()(64bit)" in text


def test_unknown_package_has_did_you_mean():
    with pytest.raises(Error) as e:
        resolve("docker-cee", "ipset")
    assert "no package named 'docker-cee'" in e.value.render() and "did you mean docker-ce" in e.value.render()


def test_pin_without_match_lists_versions():
    with pytest.raises(Error) as e:
        resolve({"name": "docker-ce", "version": "17.03.0"})
    assert "3:18.09.1-3.el7" in e.value.render() and "3:18.09.2-3.el7" in e.value.render()


def test_base_name_in_no_repo_is_an_error():
    with pytest.raises(Error) as e:
        resolve("ipset", base=("glibc", "bassh"))
    assert "bassh" in e.value.message and e.value.hint and "did you mean bash" in e.value.render()


def test_repodata_goes_through_mirrors_and_checks_primary():
    files = world()
    mirrored = {k.replace("http://centos.example/", "http://127.0.0.1:1/centos/"): v for k, v in files.items()}
    mirrors = Mirrors(urls=(UrlMirror(**{"from": "http://centos.example/", "to": "http://127.0.0.1:1/centos/"}),))
    session = FakeSession(mirrored)
    got = rpm.resolve(FakeSpec([Package(name="ipset")], mirrors=mirrors), session)
    assert got[0].url.startswith(UPDATES)  # the artifact keeps its upstream name
    assert any(u.startswith("http://127.0.0.1:1/centos/7/updates/") for u in session.asked)
    # a primary that does not match repomd's checksum is refused
    for k in list(mirrored):
        if "updates" in k and k.endswith("primary.xml.gz"):
            mirrored[k] = gzip.compress(b"<metadata/>")
    with pytest.raises(Error, match="repomd.xml says"):
        rpm.resolve(FakeSpec([Package(name="ipset")], mirrors=mirrors), FakeSession(mirrored))


@pytest.fixture
def server():
    """A loopback HTTP server for a dict of path -> bytes (a path listed in `fail` answers 503 once)."""
    files: dict = {}
    fail: set = set()
    asked: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            if self.path in fail:
                fail.discard(self.path)
                self.send_error(503)
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.files, httpd.fail, httpd.asked = files, fail, asked
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve_world(server):
    """Publish world() on the server behind a mirror rule for each upstream host; (artifacts, mirrors)."""
    files = world()
    mirrors = Mirrors(urls=tuple(
        UrlMirror(**{"from": up, "to": f"{server.url}/{n}/"}) for n, up in enumerate((BASE, UPDATES, DOCKER))))
    for url, body in files.items():
        fetch_url, _ = mirrors.url_for(url)
        server.files[fetch_url[len(server.url):]] = body
    return files, mirrors


def test_fetch_verifies_and_uses_cache(tmp_path, server):
    files, mirrors = serve_world(server)
    session = requests.Session()
    arts = rpm.resolve(FakeSpec([Package(name="app")], mirrors=mirrors), session)
    cache = Cache(tmp_path / "cache")
    events = []
    out = rpm.fetch(arts, cache, session, jobs=2, progress=lambda ev, **kw: events.append((ev, kw)),
                    mirrors=mirrors)
    assert out["downloaded_bytes"] == sum(a.size for a in arts) and out["cache_hits"] == 0
    assert out["sha256"] == {a.url: a.sha256 for a in arts}
    assert sum(kw["nbytes"] for ev, kw in events if ev == "update") == out["downloaded_bytes"]
    assert all(cache.path(a.sha256).read_bytes() == files[a.url] for a in arts)
    server.files.clear()
    assert rpm.fetch(arts, cache, session, mirrors=mirrors)["cache_hits"] == 3


def test_fetch_refuses_tampered_rpm(tmp_path, server):
    _files, mirrors = serve_world(server)
    session = requests.Session()
    (a,) = rpm.resolve(FakeSpec([Package(name="ipset")], mirrors=mirrors), session)
    path = mirrors.url_for(a.url)[0][len(server.url):]
    server.files[path] = b"X" * a.size  # same size, other bytes
    cache = Cache(tmp_path / "c")
    with pytest.raises(Error) as e:
        rpm.fetch([a], cache, session, mirrors=mirrors)
    assert "sha256 mismatch" in e.value.render() and a.url in e.value.render()
    assert not cache.has(a.sha256)


def test_fetch_retries_5xx(tmp_path, server):
    _files, mirrors = serve_world(server)
    session = requests.Session()
    (a,) = rpm.resolve(FakeSpec([Package(name="ipset")], mirrors=mirrors), session)
    path = mirrors.url_for(a.url)[0][len(server.url):]
    server.fail.add(path)
    assert rpm.fetch([a], Cache(tmp_path / "c"), session, mirrors=mirrors)["downloaded_bytes"] == a.size
    assert server.asked.count(path) == 2
