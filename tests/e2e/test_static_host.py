"""The static installer on a booted host with NO usable Python: what a CentOS 7 control host without python3 is.

The testbed's rootfs has python3 (the other tests need it), so this test hides it rather than building a
second rootfs: inside the host, in a private mount namespace, /usr/lib/python3* become empty tmpfs and the
python3 binaries are covered with /dev/null; the test checks python3 really cannot start there, then runs
the executable with an empty environment (`env -i PATH=/nonexistent`). ldd on the host must call it
"not a dynamic executable".
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from bundler import static
from contract import bundle as fmt

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache"))

# Run on the host: hide every Python, prove it is gone, then run the executable with nothing inherited.
NO_PYTHON = r"""unshare --mount --propagation private sh -c '
  for d in /usr/lib/python3*; do mount -t tmpfs tmpfs "$d"; done
  for f in /usr/bin/python3*; do [ -L "$f" ] || mount --bind /dev/null "$f"; done
  if python3 -c "print(1)" >/dev/null 2>&1; then echo "python3 still runs" >&2; exit 99; fi
  cd /opt/static && exec env -i PATH=/nonexistent /opt/static/installer-linux-amd64 "$@"' sh"""


@pytest.fixture(scope="module")
def host(testbed_factory):
    """One booted host with the static executable, a small signed bundle and the example inventory in /opt/static."""
    reason = static.unavailable()
    if reason:
        pytest.skip(f"cannot build the static installer here: {reason}")
    exe = static.ensure_static(CACHE, log=print)
    tb = testbed_factory.create(1)
    opt = tb.merged(1) / "opt" / "static"
    opt.mkdir(parents=True)
    shutil.copy2(exe, opt / "installer-linux-amd64")
    shutil.copy(ROOT / "inventory.example.yaml", opt / "inventory.yaml")
    fmt.generate_keypair(opt / "keys")
    data = opt / "payload.bin"
    data.write_bytes(os.urandom(1 << 20))
    entry = fmt.Entry("binaries/payload.bin", data, data.stat().st_size, hashlib.sha256(data.read_bytes()).hexdigest())
    fmt.write_bundle(opt / "dist", "k8s", "1.10.3", [static.entry(exe), entry],
                     fmt.load_private_key(opt / "keys" / "bundle.key"), spec_sha256="0" * 64, lock_sha256="1" * 64,
                     components={}, level=3)
    return tb


def run(tb, args: str, check: bool = True):
    return tb.ssh(1, f"{NO_PYTHON} {args}", check=check)


def test_static_executable_runs_on_a_host_without_python(host):
    ldd = host.ssh(1, "ldd /opt/static/installer-linux-amd64 2>&1; true").stdout
    assert "not a dynamic executable" in ldd
    assert run(host, "--version").stdout.startswith("installer ")
    assert "verify" in run(host, "--help").stdout
    out = run(host, "verify dist/k8s-1.10.3.bundle.tar.zst --pub keys/bundle.pub").stdout
    assert ": OK: k8s 1.10.3, 2 files" in out
    run(host, "unpack dist/k8s-1.10.3.bundle.tar.zst --pub keys/bundle.pub --dest /tmp/unpacked")
    assert host.ssh(1, "test -x /tmp/unpacked/installer/installer-linux-amd64 && echo ok").stdout.strip() == "ok"
    assert "valid: 5 hosts" in run(host, "validate inventory.yaml").stdout
    out = run(host, "render -i inventory.yaml --out /tmp/rendered --state /tmp/state").stdout
    assert "pki: ca: created" in out
    n = int(host.ssh(1, "find /tmp/rendered -type f | wc -l").stdout)
    assert n > 100
