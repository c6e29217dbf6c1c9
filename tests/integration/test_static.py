"""The static installer executable: built once per session (cached by source digest), run in an EMPTY chroot.

The chroot holds only the executable, /tmp, /proc (mounted inside a private mount namespace made by
`unshare --mount`, so the mount disappears with the process even when a test fails), /dev/null and
/dev/urandom, plus the test's inputs under /work. Outputs are compared with the venv's `installer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler import static
from contract import bundle as fmt
from contract.version import __version__
from tests.typed_contents import typed

ROOT = Path(__file__).resolve().parents[2]
VENV_INSTALLER = Path(sys.executable).parent / "installer"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "COLUMNS": "100"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mounts_under(path: Path) -> list:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1] == str(path) or line.split()[1].startswith(f"{path}/")]


@pytest.fixture
def chroot(static_exe, tmp_path):
    """An empty root with the executable as /installer-linux-amd64; run(args) runs it there."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the empty chroot needs root and unshare (util-linux)")
    root = tmp_path / "root"
    for d in ("tmp", "proc", "dev", "work"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "dev/urandom", 0o444 | 0o020000, os.makedev(1, 9))
    shutil.copy2(static_exe, root / "installer-linux-amd64")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        # proc is mounted in a private mount namespace: it vanishes with the process, whatever happens
        script = 'r=$1; shift; mount -t proc proc "$r/proc" && exec chroot "$r" /installer-linux-amd64 "$@"'
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root),
                            *args], capture_output=True, text=True, env=ENV, timeout=120, check=False)
        if check:
            assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    run.root = root
    try:
        yield run
    finally:
        leftover = _mounts_under(root)
        for mp in sorted(leftover, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], check=False)
        assert not leftover, f"mounts left behind: {leftover}"


def venv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The venv's installer with the same arguments, from the chroot's root (relative paths match)."""
    r = subprocess.run([str(VENV_INSTALLER), *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                       timeout=120, check=False)
    assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _tree(top: Path) -> dict:
    return {p.relative_to(top).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o7777)
            for p in sorted(top.rglob("*")) if p.is_file()}


def _small_bundle(work: Path, exe: Path) -> Path:
    """A signed bundle holding the static executable and a few files, in work/dist (keys in work/keys)."""
    fmt.generate_keypair(work / "keys")
    data = work / "src" / "etcd-v3.3.1.tar.gz"
    data.parent.mkdir(parents=True)
    data.write_bytes(os.urandom(1 << 20))
    entries = [static.entry(exe), fmt.Entry("binaries/etcd-v3.3.1.tar.gz", data, data.stat().st_size, _sha(data))]
    res = fmt.write_bundle(work / "dist", "k8s", "1.10.3", entries, fmt.load_private_key(work / "keys/bundle.key"),
                           spec_sha256="0" * 64, lock_sha256="1" * 64, **typed({"binary/etcd": "3.3.1"}, "binaries/etcd-v3.3.1.tar.gz"),
                           created="2026-01-02T03:04:05Z", level=3)
    return res.path


def test_sources_digest_is_the_build_scripts(tmp_path):
    r = subprocess.run(["sh", str(static.BUILD_SCRIPT), "--sources-digest"], capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == static.sources_digest()


def test_build_requirements_are_pinned_with_hashes():
    import re

    lines = [ln for ln in static.REQUIREMENTS.read_text().splitlines() if ln and not ln.startswith("#")]
    names = set()
    for ln in lines:
        assert re.match(r"^[a-z0-9-]+==[^ ]+( --hash=sha256:[0-9a-f]{64})+$", ln), ln
        names.add(ln.split("==")[0])
    assert {"pyinstaller", "pyinstaller-hooks-contrib"} <= names
    from bundler import wheels

    runtime = {p.split("==")[0].lower().replace("_", "-") for p in wheels.runtime_pins()}
    assert runtime <= names, f"runtime dependencies missing from the build: {runtime - names}"


def test_is_static_and_names_its_version_and_commit(static_exe):
    ldd = subprocess.run(["ldd", str(static_exe)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    out = subprocess.run([str(static_exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"installer {__version__} (commit ")
    assert f"sources {static.sources_digest()[:12]}" in out  # built from exactly these sources
    commit = out.split("(commit ")[1].split(",")[0].removesuffix("-dirty")
    if shutil.which("git") and (ROOT / ".git").exists():
        # a cache hit may come from an earlier commit with identical sources: it must be one of ours
        r = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], check=False)
        assert r.returncode == 0, f"{commit} is not a commit of this repository"
    size = static_exe.stat().st_size
    print(f"static executable: {size / 1e6:.1f} MB")
    assert size < 60_000_000


def test_runs_every_offline_command_in_an_empty_chroot_like_the_venv(chroot):
    root, work = chroot.root, chroot.root / "work"
    bundle = _small_bundle(work, root / "installer-linux-amd64").relative_to(root).as_posix()
    shutil.copy(ROOT / "inventory.example.yaml", work / "inventory.yaml")
    pub = "work/keys/bundle.pub"

    help_text = chroot("--help").stdout
    for command in ("validate", "render", "verify", "unpack"):
        assert command in help_text

    # verify --json: byte-identical to the venv's
    ours = chroot("verify", bundle, "--pub", pub, "--json").stdout
    assert ours == venv("verify", bundle, "--pub", pub, "--json", cwd=root).stdout
    assert json.loads(ours)["ok"] is True

    chroot("unpack", bundle, "--pub", pub, "--dest", "tmp/unpacked")
    assert _sha(root / "tmp/unpacked/installer/installer-linux-amd64") == _sha(root / "installer-linux-amd64")

    assert chroot("validate", "work/inventory.yaml", "--json").stdout == \
        venv("validate", "work/inventory.yaml", "--json", cwd=root).stdout
    bad = work / "bad.yaml"
    bad.write_text((work / "inventory.yaml").read_text().replace("vip: 192.168.10.100", "vip: 999.1.1.1"))
    r = chroot("validate", "work/bad.yaml", check=False)
    assert r.returncode == 2 and "cluster.vip" in r.stdout + r.stderr and "Traceback" not in r.stderr

    # render: the venv creates the site PKI, the static executable reuses it; the trees must be identical
    venv("render", "-i", "work/inventory.yaml", "--out", "work/out-venv", "--state", "work/state", cwd=root)
    chroot("render", "-i", "work/inventory.yaml", "--out", "work/out-static", "--state", "work/state")
    venv_tree, static_tree = _tree(work / "out-venv"), _tree(work / "out-static")
    assert len(venv_tree) > 100
    assert static_tree.keys() == venv_tree.keys()
    assert [k for k in venv_tree if venv_tree[k] != static_tree[k]] == []

    # and a fresh PKI inside the chroot (needs /dev/urandom or getrandom only)
    chroot("render", "-i", "work/inventory.yaml", "--out", "tmp/out2", "--state", "tmp/state2")
    assert (root / "tmp/state2").is_dir()


def test_bootstrap_sh_extracts_the_real_executable(static_exe, tmp_path):
    bundle = _small_bundle(tmp_path, static_exe)
    r = subprocess.run(["sh", str(static.BOOTSTRAP_SCRIPT), str(bundle), str(tmp_path / "keys/bundle.pub"),
                        str(tmp_path / "bin")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "bin" / "installer-linux-amd64"
    r = subprocess.run([str(exe), "verify", str(bundle), "--pub", str(tmp_path / "keys/bundle.pub")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and ": OK: k8s 1.10.3" in r.stdout, r.stderr


def test_verifies_with_the_p256_key_as_on_centos7(chroot):
    """The frozen executable checks manifest.sig.p256 with bundle-p256.pub, like the venv's installer."""
    root, work = chroot.root, chroot.root / "work"
    keys = fmt.generate_keys(work / "keys")
    data = work / "src" / "kubelet"
    data.parent.mkdir(parents=True)
    data.write_bytes(os.urandom(1 << 16))
    entries = [fmt.Entry("binaries/kubelet", data, data.stat().st_size, _sha(data), 0o755)]
    res = fmt.write_bundle(work / "dist", "k8s", "1.10.3", entries, fmt.load_private_key(keys.key),
                           p256_key=fmt.load_p256_private_key(keys.p256_key), spec_sha256="0" * 64,
                           lock_sha256="1" * 64, components={}, created="2026-01-02T03:04:05Z", level=3)
    bundle = res.path.relative_to(root).as_posix()
    for pub in ("work/keys/bundle-p256.pub", "work/keys/bundle.pub"):
        ours = chroot("verify", bundle, "--pub", pub, "--json").stdout
        assert ours == venv("verify", bundle, "--pub", pub, "--json", cwd=root).stdout
    assert json.loads(ours)["signatures_checked"] == ["manifest.sig", "manifest.sig.p256"]
    d = json.loads(chroot("verify", bundle, "--pub", "work/keys/bundle-p256.pub", "--json").stdout)
    assert d["key_type"] == "P-256" and d["signatures_not_checked"] == ["manifest.sig"]


def test_subprocesses_get_the_callers_library_path():
    """The runtime hook undoes the bootloader's LD_LIBRARY_PATH, so ssh on the site uses its own libraries."""
    code = "import os; print(os.environ.get('LD_LIBRARY_PATH', '<unset>'))"
    # The frozen app has no -c; check the hook's logic directly with the bootloader's variables.
    env = {**ENV, "LD_LIBRARY_PATH": "/meipass", "LD_LIBRARY_PATH_ORIG": "/site/lib"}
    hook = (ROOT / "static" / "rthook_env.py").read_text()
    r = subprocess.run([sys.executable, "-c", hook + "\n" + code], env=env, capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "/site/lib"
    env = {**ENV, "LD_LIBRARY_PATH": "/meipass/lib"}
    r = subprocess.run([sys.executable, "-c", "import sys; sys._MEIPASS = '/meipass'\n" + hook + "\n" + code],
                       env=env, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "<unset>"
