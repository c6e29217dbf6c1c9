"""bundler.fetch (lock -> fetch -> cache) against real local servers: pins, drift, resume, warm rebuilds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

from bundler import fetch
from bundler import lock as lockfile
from bundler.cache import Cache
from bundler.sources import http
from bundler.spec import Spec
from contract.errors import Error
from tests.integration.test_fetch_http import Mirror

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(n: int, seed: int) -> bytes:
    return hashlib.sha256(f"build {seed}".encode()).digest() * (n // 32)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror(tmp_path / "www")
    yield m
    m.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = http.make_session()
    s.trust_env = False
    yield s
    s.close()


class World:
    """Three release files on the mirror and a binaries-only spec naming them (one pin of each kind)."""

    def __init__(self, mirror: Mirror, tmp: Path) -> None:
        self.mirror = mirror
        self.files = {
            "kubernetes-server": blob(3 * MiB, 1),
            "etcd": blob(MiB, 2),
            "flannel": blob(200_000, 3),
            "cni-plugins": blob(100_000, 4),
        }
        self.paths = {
            "kubernetes-server": "dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64.tar.gz",
            "etcd": "github.com/coreos/etcd/releases/download/v3.3.1/etcd-v3.3.1-linux-amd64.tar.gz",
            "flannel": "github.com/coreos/flannel/releases/download/v0.10.0/flannel-linux-amd64.tar.gz",
            "cni-plugins": "github.com/containernetworking/plugins/releases/download/v0.7.0/cni-plugins.tgz",
        }
        self.urls = {name: mirror.put(self.paths[name], data) for name, data in self.files.items()}
        mirror.put(self.paths["kubernetes-server"] + ".sha256", sha(self.files["kubernetes-server"]).encode())
        mirror.put("github.com/coreos/etcd/releases/download/v3.3.1/SHA256SUMS",
                   f"{sha(self.files['etcd'])}  etcd-v3.3.1-linux-amd64.tar.gz\n".encode())
        self.spec_path = tmp / "bundle-spec.yaml"
        self.spec_path.write_text("# the spec's bytes are what spec_sha256 pins\n")

    def spec(self, names=("kubernetes-server", "etcd", "flannel"), **changes: Any) -> Spec:
        binaries = []
        for name in names:
            b: Dict[str, Any] = {"name": name, "version": "1", "url": self.urls[name]}
            if name == "kubernetes-server":
                b["digest_url"] = self.urls[name] + ".sha256"
            if name == "etcd":
                b["digest_url"] = self.urls[name].rsplit("/", 1)[0] + "/SHA256SUMS"
            if name == "flannel":
                b["sha256"] = sha(self.files[name])
            b.update(changes.get(name, {}))
            binaries.append(b)
        # no RPMs or images: those sources have their own tests; this is the pipeline around them
        return Spec.model_validate({"name": "k8s", "version": "1.10.3", "binaries": binaries,
                                    "rpms": {"repos": [], "packages": []}, "images": [],
                                    "mirrors": self.mirror.mirrors.model_dump(by_alias=True)})

    def gets(self, name: str) -> int:
        return self.mirror.stats(self.paths[name]).get("get", 0)


@pytest.fixture
def world(mirror: Mirror, tmp_path: Path) -> World:
    return World(mirror, tmp_path)


def test_lock_pins_and_a_warm_fetch_requests_nothing(world: World, session, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    spec = world.spec()
    lk = fetch.lock(spec, world.spec_path, session, cache)
    pins = {b.name: (b.pin_source, b.sha256, b.size) for b in lk.binaries}
    assert pins == {
        "kubernetes-server": ("upstream", sha(world.files["kubernetes-server"]), 3 * MiB),
        "etcd": ("upstream", sha(world.files["etcd"]), MiB),
        "flannel": ("spec", sha(world.files["flannel"]), 200_000),
    }
    assert lk.spec_sha256 == lockfile.spec_digest(world.spec_path)
    path = lockfile.write(lk, lockfile.path_for(world.spec_path))
    lk = lockfile.load(path)

    gets = {n: world.gets(n) for n in world.paths}
    res = fetch.fetch(spec, lk, cache, session, locked=True)  # lock left everything in the cache
    assert res.downloaded_bytes == 0 and res.cache_hits == 3 and not res.lock_changed
    assert {n: world.gets(n) for n in world.paths} == gets
    assert res.artifacts["binary"] == 3
    for f in res.by_kind("binary"):
        assert f.path.read_bytes() == world.files[f.name] and f.path == cache.path(f.sha256)

    cold = Cache(tmp_path / "cold")
    events: List[str] = []
    res = fetch.fetch(spec, lk, cold, session, locked=True, progress=lambda ev, **kw: events.append(ev))
    assert res.downloaded_bytes == sum(len(world.files[n]) for n in ("kubernetes-server", "etcd", "flannel"))
    assert events.count("finish") == 3
    gets = {n: world.gets(n) for n in world.paths}
    again = fetch.fetch(spec, lk, cold, session, locked=True)
    assert again.downloaded_bytes == 0 and {n: world.gets(n) for n in world.paths} == gets


def test_first_seen_pin_and_added_binary(world: World, session, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(world.spec(), world.spec_path, session, cache)
    grown = world.spec(("kubernetes-server", "etcd", "flannel", "cni-plugins"))
    with pytest.raises(Error) as e:
        fetch.fetch(grown, lk, cache, session, locked=True)
    assert "not in the lock; run `bundler lock`" in e.value.message
    assert "binary cni-plugins 1" in e.value.details

    res = fetch.fetch(grown, lk, cache, session, locked=False, spec_path=world.spec_path)
    assert res.lock_changed
    cni = res.lock.binary("cni-plugins")
    assert (cni.pin_source, cni.sha256, cni.size) == ("first-seen", sha(world.files["cni-plugins"]), 100_000)
    assert [b.name for b in res.lock.binaries] == ["cni-plugins", "etcd", "flannel", "kubernetes-server"]
    assert res.downloaded_bytes == 100_000


def test_drift_is_refused_with_the_relock_hint(world: World, session, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(world.spec(), world.spec_path, session, cache)
    moved = world.spec(etcd={"url": world.urls["cni-plugins"], "version": "3.3.2"})
    for locked in (True, False):
        with pytest.raises(Error) as e:
            fetch.fetch(moved, lk, cache, session, locked=locked)
        assert "no longer matches the spec" in e.value.message
        assert any("binary etcd: the spec's url" in d for d in e.value.details)
        assert "bundler lock" in e.value.hint


def test_upstream_digest_disagreeing_with_content_is_refused(world: World, session, tmp_path: Path) -> None:
    world.mirror.put(world.paths["kubernetes-server"] + ".sha256", ("f" * 64 + "\n").encode())
    cache = Cache(tmp_path / "cache")
    with pytest.raises(Error) as e:
        fetch.lock(world.spec(), world.spec_path, session, cache)
    assert "sha256 mismatch" in e.value.message and "f" * 64 in e.value.render()
    assert not cache.has(sha(world.files["kubernetes-server"]))


def test_killed_build_resumes_and_fetches_only_what_was_missing(world: World, session,
                                                                tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(world.spec(), world.spec_path, session, Cache(tmp_path / "locking"))
    lock_path = lockfile.write(lk, tmp_path / "bundle-lock.yaml")
    big = world.paths["kubernetes-server"]
    world.mirror.fault(path="/" + big, kind="slow", chunk=64 * 1024, delay=0.02, times=1)
    script = textwrap.dedent(f"""
        import requests
        from bundler import fetch, lock
        from bundler.cache import Cache
        from bundler.spec import Spec
        spec = Spec.model_validate({world.spec().model_dump(by_alias=True)!r})
        s = requests.Session(); s.trust_env = False
        fetch.fetch(spec, lock.load({str(lock_path)!r}), Cache({str(cache.root)!r}), s, jobs=1, locked=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    partial = cache.partial(f"sha256-{sha(world.files['kubernetes-server'])}")
    try:
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size >= MiB):
            assert time.monotonic() < deadline, "the build never got going"
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    kept = partial.stat().st_size
    # jobs=1 in lock order (etcd, flannel, kubernetes-server): the small ones were done before the kill
    assert all(cache.has(sha(world.files[n])) for n in ("etcd", "flannel"))
    gets = {n: world.gets(n) for n in world.paths}

    res = fetch.fetch(world.spec(), lockfile.load(lock_path), cache, session, locked=True)
    assert res.downloaded_bytes == len(world.files["kubernetes-server"]) - kept
    assert world.mirror.stats(big)["ranges"] == [f"bytes={kept}-"]
    assert {n: world.gets(n) for n in ("etcd", "flannel")} == {n: gets[n] for n in ("etcd", "flannel")}
    for f in res.files:
        assert sha(f.path.read_bytes()) == f.sha256


def test_prune_keeps_what_the_lock_references(world: World, session, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(world.spec(), world.spec_path, session, cache)
    with cache.writer() as w:
        w.write(b"an artifact of an older bundle")
    report = cache.prune(lk.digests())
    assert report.removed_objects == [w.sha256] and report.kept_objects == 3
    assert fetch.fetch(world.spec(), lk, cache, session, locked=True).downloaded_bytes == 0


# --- the default spec against the stand-in upstreams (HTTP mirror, yum repos, registries) ----------

@pytest.fixture(scope="module")
def stand_ins(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's `upstreams` fixture when the project has one, else our own for this module."""
    try:
        yield request.getfixturevalue("upstreams")
        return
    except pytest.FixtureLookupError:
        pass
    from tests.fixtures import upstream

    ups = upstream.start(tmp_path_factory.mktemp("upstreams"))
    try:
        yield ups
    finally:
        ups.stop()


@pytest.fixture
def default_spec(stand_ins: Any) -> Spec:
    from bundler import spec as specmod

    return specmod.load(stand_ins.spec_file, mirrors=stand_ins.mirrors_file)


def test_default_spec_lock_fetch_and_warm_rebuild(stand_ins: Any, default_spec: Spec, session,
                                                  tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(default_spec, stand_ins.spec_file, session, cache, jobs=4)
    assert {b.name for b in lk.binaries} == {b.name for b in default_spec.selected_binaries()}
    assert {b.pin_source for b in lk.binaries if b.name.startswith("kubernetes")} == {"upstream"}
    assert lk.binary("etcd").pin_source == "upstream" and lk.binary("flannel").pin_source == "first-seen"
    assert {"docker-ce", "haproxy", "keepalived"} <= {r.name for r in lk.rpms}
    assert {i.ref for i in lk.images} == {i.ref for i in default_spec.selected_images()}
    path = lockfile.write(lk, tmp_path / "bundle-lock.yaml")
    assert lockfile.load(path) == lk

    res = fetch.fetch(default_spec, lockfile.load(path), cache, session, locked=True)
    assert res.artifacts["binary"] == len(lk.binaries) and res.artifacts["rpm"] == len(lk.rpms)
    for f in res.files:
        assert f.path.stat().st_size == f.size
    assert {f.sha256 for f in res.files} <= lk.digests()

    stand_ins.reset_stats()
    warm = fetch.fetch(default_spec, lk, cache, session, locked=True)
    assert warm.downloaded_bytes == 0
    assert sum(s.get("get", 0) for s in stand_ins.stats().values()) == 0  # not even a request
    assert cache.prune(lk.digests()).removed_objects == []


def test_default_spec_rpm_resumes_after_reset(stand_ins: Any, default_spec: Spec, session,
                                               tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    # lock downloads every RPM to record its signer: lock into another cache so the fetch starts cold
    lk = fetch.lock(default_spec, stand_ins.spec_file, session, Cache(tmp_path / "locking"))
    biggest = max(lk.rpms, key=lambda r: r.size)
    stand_ins.reset_stats()
    stand_ins.fault(biggest.url, "reset", after=biggest.size // 2)
    res = fetch.fetch(default_spec, lk, cache, session, locked=True, sleep=lambda s: None)
    assert cache.verify(biggest.sha256)
    st = stand_ins.stats(biggest.url)
    assert st["ranges"] == [f"bytes={biggest.size // 2}-"] and st["bytes"] == biggest.size
    assert res.downloaded_bytes >= biggest.size
