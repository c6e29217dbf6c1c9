"""The static build runs in a private directory of the bundler cache: created 0700, refused when others could write
it, in bundler.cache.private_dir and in static/build.sh alike (its output is signed into the bundle)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bundler import cache, static
from contract.errors import Error

ROOT = Path(__file__).resolve().parents[2]


def build_sh(work: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """build.sh up to its first prerequisite: the work directory check comes before it (no build runs)."""
    env = dict(os.environ, STATIC_WORK=str(work), STATIC_PYTHON=str(tmp_path / "no-python"))
    return subprocess.run(["sh", str(static.BUILD_SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_missing_directory_is_created_0700_by_both(tmp_path):
    old = os.umask(0o022)
    try:
        p = cache.private_dir(tmp_path / "a" / "work", "the static build directory")
        assert p.is_dir() and mode(p) == 0o700
        r = build_sh(tmp_path / "b" / "work", tmp_path)
    finally:
        os.umask(old)
    assert mode(tmp_path / "b" / "work") == 0o700
    assert r.returncode == 2 and "no-python not found" in r.stderr  # got past the check to the prerequisites
    assert cache.private_dir(p, "x") == p  # an existing private one is used as it is
    p.chmod(0o755)
    assert cache.private_dir(p, "x") == p  # readable by others is fine: only writing is not


@pytest.mark.parametrize("bits", [0o777, 0o775, 0o1777])
def test_group_or_world_writable_is_refused_by_both(tmp_path, bits):
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(bits)
    with pytest.raises(Error) as e:
        cache.private_dir(work, "the static build directory")
    assert "group- or world-writable" in e.value.message and e.value.hint
    r = build_sh(work, tmp_path)
    assert r.returncode == 2 and "group- or world-writable" in r.stderr and "refusing to build in it" in r.stderr
    assert list(work.iterdir()) == []  # nothing written into it


def test_symlink_is_refused_by_both(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "work").symlink_to(real)
    with pytest.raises(Error, match="symbolic link"):
        cache.private_dir(tmp_path / "work", "the static build directory")
    r = build_sh(tmp_path / "work", tmp_path)
    assert r.returncode == 2 and "is a symbolic link or not a directory" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_owned_by_another_user_is_refused_by_both(tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    os.chown(work, 65534, 65534)
    with pytest.raises(Error, match="is owned by uid 65534, not by this user"):
        cache.private_dir(work, "the static build directory")
    r = build_sh(work, tmp_path)
    assert r.returncode == 2 and "is owned by uid 65534, not by this user" in r.stderr


def test_default_work_dir_is_in_the_bundler_cache_not_var_tmp(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("STATIC_WORK", "K8S_OFFLINE_CACHE")}
    env.update(HOME=str(tmp_path / "home"), STATIC_PYTHON=str(tmp_path / "no-python"))
    r = subprocess.run(["sh", str(static.BUILD_SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "no-python not found" in r.stderr
    assert mode(tmp_path / "home/.cache/k8s-offline/static/work") == 0o700
    env["K8S_OFFLINE_CACHE"] = str(tmp_path / "cache")
    subprocess.run(["sh", str(static.BUILD_SCRIPT), str(tmp_path / "out")], capture_output=True, env=env, cwd=ROOT,
                   timeout=60)
    assert mode(tmp_path / "cache/static/work") == 0o700


def test_ensure_static_never_uses_an_executable_planted_in_a_writable_cache(tmp_path):
    base = tmp_path / "cache" / "static"
    planted = base / static.sources_digest() / static.EXECUTABLE
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"#!/bin/sh\necho pwned\n")
    base.chmod(0o777)
    with pytest.raises(Error, match="group- or world-writable"):
        static.ensure_static(tmp_path / "cache")
    base.chmod(0o700)
    assert static.ensure_static(tmp_path / "cache") == planted  # a private cache is trusted as before
