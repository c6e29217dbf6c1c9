"""The facts script's hash cache, run for real with dash and bash (CentOS 7's sh) on files in a tmp dir.

sha256sum on PATH is a wrapper that logs each file it is given, so a test can tell which files a run read.
Files a test caches must have a ctime at least RACY_SECONDS old: they come from a pool made once per module.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from installer import facts, facts_hashes

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]
NAMES = ("big", "small", "conf")
POOL = 48


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> List[Path]:
    """Directories of files whose ctime is old enough to be cached (one sleep for the whole module)."""
    root = tmp_path_factory.mktemp("aged")
    dirs = []
    for i in range(POOL):
        d = root / f"d{i}"
        d.mkdir()
        (d / "big").write_bytes(os.urandom(1 << 20))
        (d / "small").write_bytes(b"abc")
        (d / "conf").write_text(f"setting = {i}\n")
        dirs.append(d)
    time.sleep(facts_hashes.RACY_SECONDS + 1.1)
    return dirs


class Host:
    """One shell, a cache path and the logging sha256sum; run() returns {path: FileState or None}."""

    def __init__(self, shell: str, tmp: Path, files: Path) -> None:
        self.shell, self.files = shell, files
        self.cache = tmp / "cachedir" / "sub" / "hashes"
        self.log = tmp / "sha256sum.log"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.wrap("sha256sum", f'for a; do [ "$a" = -- ] || echo "$a"; done >> {self.log}\n')
        self.paths = [str(files / n) for n in NAMES]

    def wrap(self, command: str, body: str) -> None:
        real = shutil.which(command)
        w = self.bin / command
        w.write_text(f"#!/bin/sh\n{body}exec {real} \"$@\"\n")
        w.chmod(0o755)

    def run(self, paths: Optional[List[str]] = None, update: bool = True) -> Dict[str, object]:
        paths = self.paths if paths is None else paths
        text = facts.script(paths, [], commands=(), hash_cache=str(self.cache), update_cache=update)
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}")
        r = subprocess.run([self.shell, "-c", text], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return dict(facts.parse(r.stdout, host="t", managed_files=paths).files)

    def hashed(self) -> int:
        """Files sha256sum was given since the last call of hashed()."""
        n = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        self.log.unlink(missing_ok=True)
        return n

    def cache_lines(self) -> List[str]:
        return self.cache.read_text().splitlines()


@pytest.fixture(params=SHELLS)
def host(request, pool, tmp_path) -> Host:
    return Host(request.param, tmp_path, pool.pop())


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_first_run_hashes_every_file_and_writes_a_private_cache(host):
    files = host.run()
    assert host.hashed() == 3
    for p in host.paths:
        st = os.stat(p)
        assert files[p].sha256 == sha(p) and files[p].mode == stat.S_IMODE(st.st_mode)
    assert stat.S_IMODE(host.cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.cache.parent.stat().st_mode) == 0o700
    lines = host.cache_lines()
    assert len(lines) == 3
    for line, p in zip(lines, host.paths):
        st = os.stat(p)
        f = line.split(" ")
        assert f[0] == sha(p) and line.endswith(" " + p)
        assert f[1:4] == [str(st.st_dev), str(st.st_ino), str(st.st_size)]


def test_second_run_reads_no_file_and_gives_the_same_facts(host):
    first = host.run()
    host.hashed()
    before = host.cache.stat()
    assert host.run() == first
    assert host.hashed() == 0
    after = host.cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten


def test_one_byte_changed_with_mtime_restored_is_detected_by_ctime(host):
    host.run()
    host.hashed()
    big = host.paths[0]
    st = os.stat(big)
    with open(big, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    # what a tamperer can do from user space: the same size and the old mtime, to the nanosecond
    secs, ns = divmod(st.st_mtime_ns, 10**9)
    subprocess.run(["touch", "-d", f"@{secs}.{ns:09d}", big], check=True)
    now = os.stat(big)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert now.st_ctime_ns != st.st_ctime_ns
    files = host.run()
    assert files[big].sha256 == sha(big) != hashlib.sha256(b"").hexdigest()
    assert host.hashed() == 1  # only the changed file was read again


def test_replaced_file_with_the_same_size_and_mtime_is_detected(host):
    host.run()
    host.hashed()
    small = host.paths[1]
    st = os.stat(small)
    tmp = small + ".new"
    Path(tmp).write_bytes(b"abd")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp, small)
    assert os.stat(small).st_ino != st.st_ino and os.stat(small).st_mtime_ns == st.st_mtime_ns
    files = host.run()
    assert files[small].sha256 == hashlib.sha256(b"abd").hexdigest()
    assert host.hashed() == 1


@pytest.mark.parametrize("garble", [
    lambda line: "z" * 64 + line[64:],  # not a sum
    lambda line: line[1:],  # the sum one character short
    lambda line: line[:len(line) // 2],  # truncated
    lambda line: line.replace(" ", "  ", 1),  # fields shifted
    lambda line: line + " trailing",
    lambda line: "\x00\xff" + line,
])
def test_a_garbled_cache_line_is_ignored_and_replaced(host, garble):
    first = host.run()
    host.hashed()
    lines = host.cache_lines()
    lines[0] = garble(lines[0])
    host.cache.write_text("\n".join(["junk", "", *lines, "x" * 300]) + "\n", errors="surrogateescape")
    assert host.run() == first
    assert host.hashed() == 1  # the garbled one, hashed again; the others still from the cache
    assert len(host.cache_lines()) == 3 and host.run() == first and host.hashed() == 0


def test_a_missing_file_prints_dash_and_is_not_cached(host):
    gone = str(host.files / "gone")
    paths = [gone, *host.paths, str(host.files)]  # a directory is not a file either
    files = host.run(paths)
    assert files[gone] is None and files[str(host.files)] is None
    assert files[host.paths[1]].sha256 == sha(host.paths[1])
    assert len(host.cache_lines()) == 3


def test_a_recently_changed_file_is_hashed_on_every_run(host):
    fresh = host.files / "fresh"
    fresh.write_bytes(b"new")
    paths = [*host.paths, str(fresh)]
    host.run(paths)
    host.hashed()
    for _ in range(2):
        assert host.run(paths)[str(fresh)].sha256 == hashlib.sha256(b"new").hexdigest()
        assert host.hashed() == 1
    assert not any(line.endswith(" " + str(fresh)) for line in host.cache_lines())


def test_a_symlink_is_hashed_on_every_run(host):
    link = host.files / "link"
    link.symlink_to(host.paths[0])
    paths = [str(link)]
    for _ in range(2):
        assert host.run(paths)[str(link)].sha256 == sha(host.paths[0])
        assert host.hashed() == 1


def test_a_stat_without_the_identity_formats_means_hashing_not_trusting(host):
    host.run()
    host.hashed()
    # a stat that refuses anything but the old '%a %U %G' format
    host.wrap("stat", "case \"$2\" in '%a %U %G') ;; *) exit 1 ;; esac\n")
    for _ in range(2):
        files = host.run()
        assert host.hashed() == 3
        assert all(files[p].sha256 == sha(p) and files[p].owner for p in host.paths)


def test_read_only_uses_the_cache_but_never_writes_it(host):
    host.run(update=False)
    assert host.hashed() == 3 and not host.cache.parent.parent.exists()
    first = host.run()
    host.hashed()
    before = host.cache.read_bytes()
    extra = [*host.paths, str(host.files / "gone")]
    assert host.run(extra, update=False) == dict(first, **{extra[-1]: None})
    assert host.hashed() == 0 and host.cache.read_bytes() == before


def test_an_unwritable_cache_costs_only_the_hashing(host):
    host.cache.parent.parent.parent.mkdir(exist_ok=True)
    host.cache.parent.parent.write_text("a file where the directory should be")
    for _ in range(2):
        files = host.run()
        assert host.hashed() == 3 and all(files[p].sha256 == sha(p) for p in host.paths)


def test_without_a_cache_every_file_is_hashed(host):
    text = facts.script(host.paths, [], commands=(), hash_cache=None)
    env = dict(os.environ, PATH=f"{host.bin}:{os.environ['PATH']}")
    for _ in range(2):
        r = subprocess.run([host.shell, "-c", text], env=env, capture_output=True, text=True, check=True)
        files = facts.parse(r.stdout, host="t", managed_files=host.paths).files
        assert all(files[p].sha256 == sha(p) for p in host.paths) and host.hashed() == 3
    assert not host.cache.parent.parent.exists()


def test_the_files_a_run_hashes_go_to_one_sha256sum_call(host):
    calls = host.bin.parent / "calls.log"
    host.wrap("sha256sum", f'echo call >> {calls}\nfor a; do [ "$a" = -- ] || echo "$a"; done >> {host.log}\n')
    fresh = host.files / "fresh2"
    fresh.write_bytes(b"racy")
    paths = [*host.paths, str(fresh)]
    host.run(paths)
    assert host.hashed() == 4 and calls.read_text().count("call") == 1
    host.run(paths)  # only the recently changed one, in one call again
    assert host.hashed() == 1 and calls.read_text().count("call") == 2


def test_a_path_that_is_not_plain_is_hashed_by_the_plain_loop(host):
    odd = host.files / "with space"
    odd.write_bytes(b"odd")
    paths = [*host.paths, str(odd), str(host.files / "gone too")]
    for _ in range(2):
        files = host.run(paths)
        assert files[str(odd)].sha256 == hashlib.sha256(b"odd").hexdigest() and files[paths[-1]] is None
        assert all(files[p].sha256 == sha(p) for p in host.paths)
        assert host.hashed() == 4  # no cache for such a run
