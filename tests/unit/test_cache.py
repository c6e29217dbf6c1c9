"""The content-addressed cache: verified publishing, concurrency, prune (no servers needed)."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from bundler.cache import Cache, default_root, hex_of
from contract.errors import Error


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def test_layout_and_writer_publishes_verified(cache: Cache) -> None:
    data = b"hello world\n" * 1000
    with cache.writer(expected_sha256=sha(data)) as w:
        w.write(data[:5000])
        w.write(data[5000:])
    assert w.sha256 == sha(data) and w.size == len(data)
    path = cache.path(sha(data))
    assert path == cache.root / "sha256" / sha(data)[:2] / sha(data)
    assert path.read_bytes() == data
    assert cache.has(sha(data)) and cache.has(f"sha256:{sha(data)}", len(data))
    assert not cache.has(sha(data), len(data) + 1)
    assert list((cache.root / "tmp").iterdir()) == []


def test_mismatch_raises_and_publishes_nothing(cache: Cache) -> None:
    wrong = "0" * 64
    with pytest.raises(Error) as e:
        with cache.writer(expected_sha256=wrong) as w:
            w.write(b"not what was pinned")
    text = e.value.render()
    assert wrong in text and sha(b"not what was pinned") in text
    assert not cache.has(wrong) and not cache.has(sha(b"not what was pinned"))
    assert list((cache.root / "tmp").iterdir()) == []


def test_size_mismatch_and_exception_in_block(cache: Cache) -> None:
    with pytest.raises(Error, match="size mismatch"):
        with cache.writer(expected_size=3) as w:
            w.write(b"four")
    with pytest.raises(RuntimeError):
        with cache.writer() as w:
            w.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(cache.objects()) == [] and list((cache.root / "tmp").iterdir()) == []


def test_add_file_and_second_writer_discards(cache: Cache, tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    h = cache.add_file(f)
    assert h == sha(f.read_bytes())
    ino = cache.path(h).stat().st_ino
    assert cache.add_file(f, expected_sha256=h) == h
    assert cache.path(h).stat().st_ino == ino  # the first published copy stays
    assert list((cache.root / "tmp").iterdir()) == []


def test_bad_digest_is_an_error(cache: Cache) -> None:
    with pytest.raises(Error, match="not a sha256"):
        cache.path("abc")
    assert hex_of("sha256:" + "a" * 64) == "a" * 64


def test_default_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K8S_OFFLINE_CACHE", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c"
    monkeypatch.delenv("K8S_OFFLINE_CACHE")
    assert default_root() == Path.home() / ".cache" / "k8s-offline"


def test_concurrent_threads_same_object(cache: Cache) -> None:
    data = os.urandom(2 * 1024 * 1024)
    errors = []
    barrier = threading.Barrier(8)

    def put() -> None:
        try:
            barrier.wait()
            with cache.writer(expected_sha256=sha(data)) as w:
                for i in range(0, len(data), 65536):
                    w.write(data[i:i + 65536])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.path(sha(data)).read_bytes() == data
    assert [s for s, _ in cache.objects()] == [sha(data)]
    assert list((cache.root / "tmp").iterdir()) == []


def _write_in_process(root: str, seed: int, n: int) -> None:
    cache = Cache(root)
    for i in range(n):
        data = (f"object {i}\n".encode()) * 100_000  # same objects in every process
        with cache.writer(expected_sha256=sha(data)) as w:
            w.write(data)


def test_concurrent_processes_same_objects(cache: Cache) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_in_process, args=(str(cache.root), s, 5)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(list(cache.objects())) == 5
    for h, _ in cache.objects():
        assert cache.verify(h)
    assert list((cache.root / "tmp").iterdir()) == []


def test_prune_keeps_referenced_and_live_partials(cache: Cache) -> None:
    hashes = []
    for i in range(3):
        with cache.writer() as w:
            w.write(f"object {i}".encode())
        hashes.append(w.sha256)
    stale = cache.partial("sha256-" + "1" * 64)
    stale.write_bytes(b"left over by a killed build")
    live = cache.partial("sha256-" + "2" * 64)
    live.write_bytes(b"being downloaded right now")
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        report = cache.prune({hashes[0], "sha256:" + hashes[2]})
    finally:
        os.close(fd)
    assert report.removed_objects == [hashes[1]]
    assert report.kept_objects == 2 and report.removed_partials == 1
    assert not stale.exists() and live.exists()
    assert cache.has(hashes[0]) and not cache.has(hashes[1]) and cache.has(hashes[2])
    assert cache.size() == len(b"object 0") + len(b"object 2")


def test_verify_removes_a_damaged_object(cache: Cache) -> None:
    with cache.writer() as w:
        w.write(b"good")
    path = cache.path(w.sha256)
    path.write_bytes(b"bad!")  # someone tampered with the cache
    assert not cache.verify(w.sha256)
    assert not path.exists()


def _gzip_object(cache: Cache, data: bytes) -> str:
    with cache.writer() as w:
        w.write(gzip.compress(data, mtime=0))
    return w.sha256


def test_gunzipped_is_computed_once_and_kept_with_its_source(cache: Cache) -> None:
    data = b"kubernetes/server/bin/kubelet " * 1000
    gz = _gzip_object(cache, data)
    sha, size = cache.gunzipped(gz)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert cache.path(sha).read_bytes() == data
    mtime = cache.path(sha).stat().st_mtime_ns
    assert cache.gunzipped(gz) == (sha, size) and cache.path(sha).stat().st_mtime_ns == mtime  # not redone
    report = cache.prune({gz})
    assert report.kept_objects == 2 and cache.has(sha)
    other = _gzip_object(cache, b"another release")
    other_plain, _ = cache.gunzipped(other)
    report = cache.prune({gz})
    assert set(report.removed_objects) == {other, other_plain}
    assert cache.has(sha) and not (cache.root / "derived" / "gunzip" / other).exists()


def test_gunzipped_redoes_a_pruned_or_lost_result(cache: Cache) -> None:
    gz = _gzip_object(cache, b"etcd" * 100)
    sha, _ = cache.gunzipped(gz)
    cache.path(sha).unlink()
    assert cache.gunzipped(gz)[0] == sha and cache.has(sha)


def test_gunzipped_of_something_not_gzip_is_a_clear_error(cache: Cache) -> None:
    with cache.writer() as w:
        w.write(b"<html>not found</html>")
    with pytest.raises(Error) as e:
        cache.gunzipped(w.sha256)
    assert "cannot decompress" in e.value.message and "not a gzip file" in e.value.render()
    assert list((cache.root / "tmp").iterdir()) == []
