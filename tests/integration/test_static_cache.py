"""The static executable's start-up: unpacked once into a private cache keyed by its payload, checked on every start.

Most tests use a small executable made here from the real static/launcher.c and static/pack.py around a fake
onedir whose "bootloader" is a copy of /usr/bin/echo (so a start prints its arguments, in a fraction of a
second); the last ones use the real executable (bundler.static.ensure_static, cached by source digest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bundler import static

ROOT = Path(__file__).resolve().parents[2]
NAME = static.EXECUTABLE
ENV_CACHE = "K8S_OFFLINE_INSTALLER_CACHE"
TRAILER = 96


def payload(exe: Path) -> tuple:
    """(key, manifest lines) from the executable's trailer, checking that the key is the manifest's sha256."""
    data = exe.read_bytes()
    t = data[-TRAILER:]
    assert t[:8] == b"K8SPAYL1"
    moff, mlen, _ = struct.unpack("<QQQ", t[8:32])
    manifest = data[moff:moff + mlen]
    key = t[32:].decode()
    assert hashlib.sha256(manifest).hexdigest() == key
    return key, manifest.decode().splitlines()


@pytest.fixture(scope="module")
def fake_exe(tmp_path_factory) -> Path:
    """launcher.c + pack.py around a fake onedir: installer-linux-amd64 is /usr/bin/echo, _internal/ a few files."""
    reason = static.unavailable()
    if reason:
        pytest.skip(f"cannot build the static installer here: {reason}")
    top = tmp_path_factory.mktemp("fake")
    onedir = top / NAME
    (onedir / "_internal" / "lib-dynload").mkdir(parents=True)
    shutil.copy2("/usr/bin/echo", onedir / NAME)
    (onedir / "_internal" / "base_library.zip").write_bytes(os.urandom(300_000))
    (onedir / "_internal" / "lib-dynload" / "mod.so").write_bytes(b"\0" * 1000)
    (onedir / "_internal" / "Lorem ipsum.txt").write_text("a file name with a blank\n")
    (onedir / "_internal" / "empty").write_bytes(b"")
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(top / "launcher"),
                    str(static.STATIC_DIR / "launcher.c"), "-lcrypto", "-lz"], check=True, capture_output=True)
    subprocess.run([sys.executable, str(static.STATIC_DIR / "pack.py"), str(top / "launcher"), str(onedir),
                    str(top / "exe")], check=True, capture_output=True)
    return top / "exe"


def start(exe: Path, cache: Path, *args: str, env: dict = None) -> subprocess.CompletedProcess:
    e = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", ENV_CACHE: str(cache), **(env or {})}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=e, timeout=120, check=False)


def snapshot(top: Path) -> dict:
    """Every path under top with what an unpack would change: inode, mtime and ctime."""
    out = {}
    for p in [top, *sorted(top.rglob("*"))]:
        st = p.lstat()
        out[p.relative_to(top).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return out


def test_payload_names_glibc_and_the_onedir_with_their_digests(fake_exe):
    key, lines = payload(fake_exe)
    paths = {ln.split(" ", 5)[5]: ln.split(" ") for ln in lines}
    assert {"_internal", "_internal/lib-dynload", NAME, "_internal/ld-linux-x86-64.so.2", "_internal/libc.so.6",
            "_internal/Lorem ipsum.txt"} <= paths.keys()
    assert paths[NAME][:2] == ["f", "0755"] and paths["_internal/base_library.zip"][:2] == ["f", "0644"]
    assert paths[NAME][4] == hashlib.sha256(Path("/usr/bin/echo").read_bytes()).hexdigest()
    assert list(paths) == sorted(paths, key=str.encode)  # parents before children


def test_first_start_unpacks_later_starts_reuse_the_entry(fake_exe, tmp_path):
    cache = tmp_path / "home" / ".cache" / "k8s-offline-installer"
    r = start(fake_exe, cache, "hello", "a b")
    assert r.returncode == 0 and r.stdout == "hello a b\n", r.stderr
    key, lines = payload(fake_exe)
    assert sorted(os.listdir(cache)) == [key]  # one entry, no temporary directory left
    for d in (cache, cache.parent, cache / key):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    entry = cache / key
    assert hashlib.sha256((entry / NAME).read_bytes()).hexdigest() == \
        hashlib.sha256(Path("/usr/bin/echo").read_bytes()).hexdigest()
    before = snapshot(cache)
    for _ in range(3):
        r = start(fake_exe, cache, "again")
        assert r.returncode == 0 and r.stdout == "again\n" and r.stderr == ""
    assert snapshot(cache) == before  # nothing written, nothing replaced: no unpack


def test_cache_location_xdg_then_home_then_passwd(fake_exe, tmp_path):
    e = {ENV_CACHE: ""}
    r = start(fake_exe, tmp_path / "unused", "x", env={**e, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert r.returncode == 0 and (tmp_path / "xdg" / "k8s-offline-installer" / payload(fake_exe)[0]).is_dir()
    r = start(fake_exe, tmp_path / "unused", "x", env={**e, "HOME": str(tmp_path / "h")})
    assert r.returncode == 0 and (tmp_path / "h" / ".cache" / "k8s-offline-installer").is_dir()
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("how", ["same-size-bytes", "loader-replaced-by-a-script", "planted-file", "mode",
                                 "missing-file", "symlink"])
def test_a_tampered_entry_is_never_run_but_unpacked_again(fake_exe, tmp_path, how):
    cache = tmp_path / "cache"
    assert start(fake_exe, cache, "first").returncode == 0
    key, _ = payload(fake_exe)
    entry = cache / key
    loader = entry / "_internal" / "ld-linux-x86-64.so.2"
    if how == "same-size-bytes":
        data = bytearray((entry / "_internal" / "base_library.zip").read_bytes())
        data[1000] ^= 0xFF
        (entry / "_internal" / "base_library.zip").write_bytes(bytes(data))
    elif how == "loader-replaced-by-a-script":  # what the launcher execs: same size and mode, other content
        size = loader.stat().st_size
        script = b"#!/bin/sh\necho TAMPERED\nexit 7\n"
        loader.write_bytes(script + b"#" * (size - len(script)))
    elif how == "planted-file":
        (entry / "_internal" / "sitecustomize.py").write_text("print('TAMPERED')\n")
    elif how == "mode":
        (entry / NAME).chmod(0o775)
    elif how == "missing-file":
        (entry / "_internal" / "libc.so.6").unlink()
    else:
        target = tmp_path / "other"
        shutil.copy2(entry / "_internal" / "empty", target)
        (entry / "_internal" / "empty").unlink()
        (entry / "_internal" / "empty").symlink_to(target)
    r = start(fake_exe, cache, "second")
    assert r.returncode == 0 and r.stdout == "second\n", r.stdout + r.stderr
    assert "TAMPERED" not in r.stdout + r.stderr
    assert "the cached copy is not used" in r.stderr and "unpacking it again" in r.stderr
    assert sorted(os.listdir(cache)) == [key]  # the altered copy was removed
    r = start(fake_exe, cache, "third")
    assert r.returncode == 0 and r.stderr == ""  # the new copy is whole


def test_an_interrupted_unpack_is_never_used(fake_exe, tmp_path):
    cache = tmp_path / "cache"
    key, _ = payload(fake_exe)
    # a start killed while unpacking leaves only a .tmp-* directory, never the entry itself
    cache.mkdir(mode=0o700)
    partial = cache / f".tmp-{key[:16]}-abcdef"
    partial.mkdir(mode=0o700)
    (partial / NAME).write_bytes(b"half")
    old = time.time() - 3600
    os.utime(partial, (old, old))
    young = cache / f".tmp-{key[:16]}-ghijkl"
    young.mkdir(mode=0o700)
    r = start(fake_exe, cache, "ok")
    assert r.returncode == 0 and r.stdout == "ok\n"
    assert sorted(os.listdir(cache)) == sorted([key, young.name])  # an old leftover is removed, a young one kept
    # and killing starts at random points of their unpack never leaves a broken entry behind
    for delay in (0.0, 0.01, 0.03):
        shutil.rmtree(cache / key)
        p = subprocess.Popen([str(fake_exe), "x"], env={ENV_CACHE: str(cache), "PATH": "/usr/bin:/bin"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = start(fake_exe, cache, "after")
        assert r.returncode == 0 and r.stdout == "after\n" and "not used" not in r.stderr


def test_first_starts_at_the_same_time_all_run_and_leave_one_entry(fake_exe, tmp_path):
    cache = tmp_path / "cache"
    env = {ENV_CACHE: str(cache), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([str(fake_exe), f"n{i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert [o[0] for o in outs] == [f"n{i}\n" for i in range(4)]
    assert sorted(os.listdir(cache)) == [payload(fake_exe)[0]]  # the losers removed their copies


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a full file system for the cache needs root and unshare (util-linux)")
def test_a_failed_unpack_leaves_nothing_behind(fake_exe, tmp_path):
    """A cache too small for the payload: a clear error, and the half-written .tmp-* directory is removed."""
    cache = tmp_path / "cache"
    cache.mkdir()
    script = ('mount -t tmpfs -o size=64k,mode=0700 tmpfs "$1" && '
              f'{ENV_CACHE}="$1" "$2" x; echo "rc=$?"; ls -A "$1"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(cache),
                        str(fake_exe)], capture_output=True, text=True, timeout=60, check=False)
    assert "rc=2" in r.stdout.splitlines() and "cannot write" in r.stderr, r.stdout + r.stderr
    assert "free some space in the cache" in r.stderr
    assert r.stdout.splitlines()[-1] == "rc=2"  # nothing listed after it: the cache is empty again


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777])
def test_a_cache_others_can_write_is_refused(fake_exe, tmp_path, bits):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(bits)
    r = start(fake_exe, cache, "x")
    assert r.returncode == 2 and r.stdout == ""
    assert f"{cache} is group- or world-writable (mode 0{bits:o}): refusing to use it as the installer's cache" \
        in r.stderr
    assert f"chmod 0700 it, or set {ENV_CACHE}" in r.stderr and "Traceback" not in r.stderr
    assert list(cache.iterdir()) == []  # nothing unpacked into it


def test_a_cache_below_a_directory_others_can_change_is_refused(fake_exe, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could rename the cache away and put their own in its place
    r = start(fake_exe, shared / "cache", "x")
    assert r.returncode == 2 and f"{shared} (above the installer's cache" in r.stderr
    assert "can be changed by other users" in r.stderr
    shared.chmod(0o1777)  # sticky, like /tmp: only the owner may rename the cache
    assert start(fake_exe, shared / "cache", "x").returncode == 0


def test_a_symlinked_cache_is_refused(fake_exe, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "cache").symlink_to(tmp_path / "real")
    r = start(fake_exe, tmp_path / "cache", "x")
    assert r.returncode == 2 and "is a symbolic link or not a directory" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_cache_owned_by_another_user_is_refused(fake_exe, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    r = start(fake_exe, cache, "x")
    assert r.returncode == 2
    assert f"{cache} is owned by uid 65534, not by this user (uid 0): refusing to use it" in r.stderr
    assert f"remove it, or set {ENV_CACHE} to a directory of your own" in r.stderr
    assert list(cache.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="covering /root and switching users needs root and unshare (util-linux)")
def test_without_home_the_home_etc_passwd_names_else_a_clear_error(fake_exe, tmp_path):
    home = next(line.split(":")[5] for line in Path("/etc/passwd").read_text().splitlines()
                if line.split(":")[2] == "0")
    fake_home = tmp_path / "root-home"
    fake_home.mkdir(mode=0o700)
    # `env -i` as root: the cache goes to root's home from /etc/passwd (here a directory of the test over it)
    script = 'mount --bind "$1" "$2" && exec env -i "$3" x'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(fake_home),
                        home, str(fake_exe)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout == "x\n", r.stderr
    assert (fake_home / ".cache" / "k8s-offline-installer" / payload(fake_exe)[0]).is_dir()
    # a user /etc/passwd does not know, without HOME: nowhere to unpack, said so
    uid = 54321
    assert not [ln for ln in Path("/etc/passwd").read_text().splitlines() if ln.split(":")[2] == str(uid)]
    with tempfile.TemporaryDirectory() as d:  # a directory that user may enter (tmp_path's parents are 0700)
        os.chmod(d, 0o755)
        exe = Path(d) / "exe"
        shutil.copy2(fake_exe, exe)
        r = subprocess.run([str(exe), "x"], capture_output=True, text=True, env={}, check=False, timeout=60,
                           user=uid)
    assert r.returncode == 2 and r.stdout == ""
    assert "HOME is not set and /etc/passwd names no home for uid 54321" in r.stderr and ENV_CACHE in r.stderr


# ---------------------------------------------------------------- the real executable

def test_real_executable_warm_start_does_not_unpack_and_is_fast(static_exe, tmp_path):
    cache = tmp_path / "cache"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir), "LC_ALL": "C.UTF-8"}
    inventory = str(ROOT / "inventory.example.yaml")
    t0 = time.perf_counter()
    r = start(static_exe, cache, "--version", env=env)
    first = time.perf_counter() - t0
    assert r.returncode == 0 and r.stdout.startswith("installer ") and "static" in r.stdout, r.stderr
    key, _ = payload(static_exe)
    assert sorted(os.listdir(cache)) == [key]
    before = snapshot(cache)
    warm = []
    for args in (["--version"], ["validate", inventory], ["--version"], ["validate", inventory]):
        t0 = time.perf_counter()
        r = start(static_exe, cache, *args, env=env)
        warm.append(time.perf_counter() - t0)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "valid: 5 hosts" in r.stdout
    assert snapshot(cache) == before  # no unpack on a warm start
    assert list(tmpdir.iterdir()) == []  # and nothing in TMPDIR (staticx and onefile unpacked there)
    print(f"first start {first:.2f} s, warm starts {', '.join(f'{w:.2f}' for w in warm)} s")
    assert min(warm) < 0.8, warm  # 0.3 s on an idle machine; the venv's `installer` takes 0.2 s

