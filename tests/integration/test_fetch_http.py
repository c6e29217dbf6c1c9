"""bundler.sources.http against a real local HTTP mirror (the stand-in's server: Range, faults, stats)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

from bundler.cache import Cache
from bundler.sources import http
from bundler.spec import Binary, Mirrors, UrlMirror
from contract.errors import Error
from tests.fixtures.upstream import httpmirror

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
HOSTS = ("dl.k8s.io", "github.com", "example.org")


class Mirror:
    """An in-process stand-in mirror serving ROOT/<host>/<path>, with its fault and stats endpoints."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = type("H", (httpmirror.Handler,), {"root": root, "state": httpmirror.State()})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def put(self, host_path: str, data: bytes) -> str:
        """Serve data at /<host_path>; return its upstream-looking URL (https://<host_path>)."""
        f = self.root / host_path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        return f"https://{host_path}"

    def fault(self, **fault: Any) -> None:
        requests.post(f"{self.base}/_faults", json=fault, timeout=5).raise_for_status()

    def stats(self, host_path: str) -> Dict[str, Any]:
        return requests.get(f"{self.base}/_stats", timeout=5).json().get("/" + host_path, {})

    @property
    def mirrors(self) -> Mirrors:
        return Mirrors(urls=tuple(UrlMirror(**{"from": f"https://{host}/", "to": f"{self.base}/{host}/"})
                                  for host in HOSTS))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror(tmp_path / "www")
    yield m
    m.close()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = http.make_session()
    s.trust_env = False  # never a proxy for loopback
    yield s
    s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


class Sleeps(list):
    """An injected sleep that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_download_verifies_and_second_run_requests_nothing(mirror, cache, session) -> None:
    data = payload(3 * MiB + 5)
    url = mirror.put("dl.k8s.io/v1/a.tar.gz", data)
    events: List[tuple] = []
    stats = http.download([http.item(url, mirror.mirrors, sha(data), name="a")], cache, session,
                          progress=lambda ev, **kw: events.append((ev, kw)))
    r = stats.results[0]
    assert (r.sha256, r.size, r.cached) == (sha(data), len(data), False)
    assert r.path.read_bytes() == data and stats.downloaded_bytes == len(data)
    assert events[0][0] == "begin" and events[-1][0] == "end"
    assert sum(kw["nbytes"] for ev, kw in events if ev == "update") == len(data)
    requests_before = mirror.stats("dl.k8s.io/v1/a.tar.gz")["requests"]

    again = http.download([http.item(url, mirror.mirrors, sha(data))], cache, session)
    assert again.downloaded_bytes == 0 and again.cache_hits == 1 and again.results[0].cached
    assert mirror.stats("dl.k8s.io/v1/a.tar.gz")["requests"] == requests_before


def test_resume_after_reset_fetches_only_the_rest(mirror, cache, session) -> None:
    data = payload(5 * MiB)
    path = "dl.k8s.io/v1/big.tar.gz"
    url = mirror.put(path, data)
    mirror.fault(path="/" + path, kind="reset", after=2 * MiB, times=1)
    sleeps = Sleeps()
    stats = http.download([http.item(url, mirror.mirrors, sha(data))], cache, session, sleep=sleeps)
    assert stats.results[0].path.read_bytes() == data
    assert stats.results[0].attempts == 2 and sleeps == [0.5]
    st = mirror.stats(path)
    assert st["ranges"] == [f"bytes={2 * MiB}-"]
    assert st["bytes"] == len(data)  # 2 MiB, then only the remaining 3 MiB
    assert stats.downloaded_bytes == len(data)


def test_wrong_content_is_refused_and_nothing_published(mirror, cache, session) -> None:
    data = payload(MiB + 3)
    path = "github.com/coreos/etcd/releases/download/v3.3.1/etcd.tar.gz"
    url = mirror.put(path, data)
    mirror.fault(path="/" + path, kind="wrong", times=1)
    with pytest.raises(Error) as e:
        http.download([http.item(url, mirror.mirrors, sha(data))], cache, session)
    text = e.value.render()
    assert f"sha256 mismatch for {url}" in text
    assert sha(data) in text and sha(bytes(b ^ 0x5A for b in data)) in text
    assert "bundler lock" in e.value.hint
    assert list(cache.objects()) == []
    assert list((cache.root / "partial").iterdir()) == [] and list((cache.root / "tmp").iterdir()) == []


def test_5xx_is_retried_then_succeeds(mirror, cache, session) -> None:
    data = payload(1000)
    path = "dl.k8s.io/flaky"
    url = mirror.put(path, data)
    mirror.fault(path="/" + path, kind="status", code=503, times=2)
    sleeps = Sleeps()
    it = http.item(url, mirror.mirrors, sha(data))
    stats = http.download([it], cache, session, sleep=sleeps, backoff=0.25)
    assert stats.results[0].path.read_bytes() == data
    assert sleeps == [0.25, 0.5]  # exponential backoff
    assert mirror.stats(path)["statuses"] == {"503": 2, "200": 1}


def test_persistent_5xx_fails_clearly(mirror, cache, session) -> None:
    path = "dl.k8s.io/down"
    url = mirror.put(path, b"never served")
    mirror.fault(path="/" + path, kind="status", code=502, times=100)
    sleeps = Sleeps()
    with pytest.raises(Error) as e:
        http.download([http.item(url, mirror.mirrors)], cache, session, retries=3, sleep=sleeps)
    assert "gave up after 4 attempts (last: HTTP 502" in e.value.message
    assert len(sleeps) == 3 and "re-run resumes" in e.value.hint


def test_404_names_the_mirror_rule(mirror, cache, session) -> None:
    rule = UrlMirror(**{"from": "https://dl.k8s.io/", "to": f"{mirror.base}/wrong-prefix/"})
    it = http.item("https://dl.k8s.io/v1.10.3/missing.tar.gz", Mirrors(urls=(rule,)), "a" * 64)
    with pytest.raises(Error) as e:
        http.download([it], cache, session)
    assert "not found (HTTP 404)" in e.value.message and f"{mirror.base}/wrong-prefix/" in e.value.message
    assert f"mirror rule: https://dl.k8s.io/ -> {mirror.base}/wrong-prefix/" in e.value.details

    direct = http.item(f"{mirror.base}/nothing/here", Mirrors())
    with pytest.raises(Error) as e:
        http.download([direct], cache, session)
    assert "no mirror rule applied" in e.value.render()


def test_interrupted_by_callback_resumes_where_it_stopped(mirror, cache, session) -> None:
    data = payload(6 * MiB, seed=2)
    path = "dl.k8s.io/interrupted.tar.gz"
    url = mirror.put(path, data)
    it = http.item(url, mirror.mirrors, sha(data))
    got = [0]

    def stop_after_2mib(event: str, **kw: Any) -> None:
        if event == "update":
            got[0] += kw["nbytes"]
            if got[0] >= 2 * MiB:
                raise KeyboardInterrupt  # what ^C does mid-download

    with pytest.raises(KeyboardInterrupt):
        http.download([it], cache, session, progress=stop_after_2mib)
    kept = cache.partial(f"sha256-{sha(data)}").stat().st_size
    assert kept == got[0] and not cache.has(sha(data))

    stats = http.download([it], cache, session)
    r = stats.results[0]
    assert r.path.read_bytes() == data and r.resumed_from == kept
    assert stats.downloaded_bytes == len(data) - kept
    assert mirror.stats(path)["ranges"] == [f"bytes={kept}-"]


def test_killed_process_resumes_and_fetches_only_the_rest(mirror, cache, tmp_path, session) -> None:
    data = payload(4 * MiB, seed=3)
    path = "dl.k8s.io/killed.tar.gz"
    url = mirror.put(path, data)
    mirror.fault(path="/" + path, kind="slow", chunk=64 * 1024, delay=0.02, times=1)
    script = textwrap.dedent(f"""
        import requests
        from bundler.cache import Cache
        from bundler.sources import http
        from bundler.spec import Mirrors, UrlMirror
        m = Mirrors(urls=(UrlMirror(**{{"from": "https://dl.k8s.io/", "to": "{mirror.base}/dl.k8s.io/"}}),))
        s = requests.Session(); s.trust_env = False
        http.download([http.item({url!r}, m, {sha(data)!r})], Cache({str(cache.root)!r}), s)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    partial = cache.partial(f"sha256-{sha(data)}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size >= MiB:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the child never got going")
        os.kill(proc.pid, signal.SIGKILL)  # a build killed in the middle
    finally:
        proc.wait(10)
    kept = partial.stat().st_size
    assert MiB <= kept < len(data) and not cache.has(sha(data))

    stats = http.download([http.item(url, mirror.mirrors, sha(data))], cache, session)
    assert stats.results[0].path.read_bytes() == data
    assert stats.downloaded_bytes == len(data) - kept
    st = mirror.stats(path)
    assert st["ranges"] == [f"bytes={kept}-"] and st["statuses"]["206"] == 1


class _NoRangeHandler(BaseHTTPRequestHandler):
    """A server that ignores Range and always answers 200 with the whole file."""

    body = b""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def test_server_ignoring_range_restarts_cleanly(cache, session) -> None:
    data = payload(2 * MiB + 7, seed=4)
    handler = type("H", (_NoRangeHandler,), {"body": data})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f"
        cache.partial(f"sha256-{sha(data)}").write_bytes(b"garbage from an earlier run")
        stats = http.download([http.item(url, Mirrors(), sha(data))], cache, session)
        assert stats.results[0].path.read_bytes() == data and stats.results[0].resumed_from == 0
    finally:
        server.shutdown()
        server.server_close()


SIOCOUTQ = 0x5411  # Linux: bytes of a TCP socket's send queue the peer has not acknowledged yet


class _ResettingHandler(BaseHTTPRequestHandler):
    """Serves `body` with Range; the first GET sends `reset_after` body bytes, waits until the client's kernel
    has acknowledged all of them, then aborts with a TCP RST (SO_LINGER 0): a real connection reset."""

    body = b""
    reset_after = 0
    protocol_version = "HTTP/1.1"
    log: List[tuple] = []  # (Range header or None, body bytes sent) per GET

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        start = int(rng.split("=", 1)[1].rstrip("-")) if rng else 0
        first = not self.log
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(self.body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        self.end_headers()
        part = self.body[start:start + self.reset_after] if first else self.body[start:]
        self.wfile.write(part)
        self.wfile.flush()
        self.log.append((rng, len(part)))
        if not first:
            return
        sock = self.connection
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0] == 0:
                break
            time.sleep(0.005)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        sock.close()  # RST: the client's recv fails with ECONNRESET


@pytest.mark.parametrize("reset_after", [1_000_000, 5_000_000])
def test_connection_reset_resumes_from_the_last_byte_received(cache, session, reset_after: int) -> None:
    """A reset inside the first MiB, and in the middle of a later one: nothing received is thrown away."""
    data = payload(30 * 1_000_000 + 11, seed=9)
    handler = type("H", (_ResettingHandler,), {"body": data, "reset_after": reset_after, "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/kubernetes-server-linux-amd64.tar.gz"
        sleeps = Sleeps()
        stats = http.download([http.item(url, Mirrors(), sha(data), len(data))], cache, session, sleep=sleeps)
    finally:
        server.shutdown()
        server.server_close()
    r = stats.results[0]
    assert handler.log == [(None, reset_after), (f"bytes={reset_after}-", len(data) - reset_after)]
    assert (r.sha256, r.size, r.attempts, sleeps) == (sha(data), len(data), 2, [0.5])
    assert r.path.read_bytes() == data and stats.downloaded_bytes == len(data)


def test_two_downloaders_of_the_same_file_fetch_it_once(mirror, cache, session) -> None:
    data = payload(2 * MiB, seed=5)
    path = "dl.k8s.io/shared.tar.gz"
    url = mirror.put(path, data)
    mirror.fault(path="/" + path, kind="slow", chunk=256 * 1024, delay=0.02, times=1)
    it = http.item(url, mirror.mirrors, sha(data))
    results: List[http.Stats] = []
    threads = [threading.Thread(target=lambda: results.append(http.download([it], cache, session)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2
    assert sorted(s.cache_hits for s in results) == [0, 1]
    assert mirror.stats(path)["get"] == 1
    assert cache.path(sha(data)).read_bytes() == data


def test_unpinned_download_learns_the_hash(mirror, cache, session) -> None:
    data = payload(12345, seed=6)
    url = mirror.put("example.org/first-seen.bin", data)
    r = http.download([http.item(url, mirror.mirrors)], cache, session).results[0]
    assert (r.sha256, r.size) == (sha(data), len(data)) and cache.has(r.sha256, r.size)


@pytest.mark.parametrize("text, filename, expected", [
    ("a" * 64 + "\n", "k.tar.gz", "a" * 64),
    ("a" * 64 + "  k.tar.gz\n", "k.tar.gz", "a" * 64),
    ("b" * 64 + "  etcd-darwin.zip\n" + "c" * 64 + "  etcd-linux.tar.gz\n", "etcd-linux.tar.gz", "c" * 64),
    ("# comment\n" + "d" * 64 + " *./release/etcd-linux.tar.gz\n", "etcd-linux.tar.gz", "d" * 64),
    ("b" * 64 + "  other.tar.gz\n", "etcd-linux.tar.gz", None),
])
def test_parse_digest_file(text: str, filename: str, expected: str) -> None:
    assert http.parse_digest_file(text, filename) == expected


def test_fetch_upstream_digest(mirror, session) -> None:
    data = payload(100, seed=7)
    url = mirror.put("github.com/coreos/etcd/releases/download/v3.3.1/etcd-v3.3.1-linux-amd64.tar.gz", data)
    sums = mirror.put("github.com/coreos/etcd/releases/download/v3.3.1/SHA256SUMS",
                      f"{'b' * 64}  etcd-v3.3.1-darwin-amd64.zip\n"
                      f"{sha(data)}  etcd-v3.3.1-linux-amd64.tar.gz\n".encode())
    b = Binary(name="etcd", version="3.3.1", url=url, digest_url=sums)
    assert http.fetch_upstream_digest(b, mirror.mirrors, session) == sha(data)
    flannel_url = url.replace("etcd-v3.3.1", "flannel")
    missing = Binary(name="flannel", version="0.10.0", url=flannel_url, digest_url=sums)
    with pytest.raises(Error, match="no sha256 for flannel-linux-amd64.tar.gz"):
        http.fetch_upstream_digest(missing, mirror.mirrors, session)


def test_tqdm_progress_draws_bars_only_on_a_terminal(mirror, cache, session) -> None:
    import io

    from bundler.sources import TqdmProgress

    assert TqdmProgress().disabled  # pytest captures stdout: not a TTY
    out = io.StringIO()
    data = payload(300_000, seed=8)
    url = mirror.put("dl.k8s.io/bar.tar.gz", data)
    http.download([http.item(url, mirror.mirrors, sha(data), len(data), name="bar")], cache, session,
                  progress=TqdmProgress(stream=out, disable=False), label="binaries")
    assert "binaries" in out.getvalue() and "1/1" in out.getvalue()
