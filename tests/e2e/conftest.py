"""Fixtures for booted test hosts: `testbed` (3 hosts, whole session) and `testbed_factory` (own testbeds).

Each testbed gets a slot: prefix `t<slot>` and net 198.18.<slot>.0/24, held with a flock for its
lifetime, so pytest-xdist workers and concurrent sessions on one machine never share a prefix or a
/24. K8S_TB_PREFIX / K8S_TB_NET force them (for one testbed per session). On a failed test the
hosts' console logs and journals go to $K8S_TB_LOGS (default /var/tmp/k8s-offline-tb/logs).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from pathlib import Path
from typing import List

import pytest

from tests.e2e.testbed import WORKDIR, Testbed, rootfs_path

SLOTS = 200


def _skip_reason() -> str:
    if os.geteuid() != 0:
        return "booting test hosts needs root (systemd-nspawn, network namespaces, mounts)"
    for tool in ("systemd-nspawn", "ip", "ssh", "ssh-keygen", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make apt: systemd-container, iproute2, openssh-client)"
    if not rootfs_path().is_dir() and shutil.which("debootstrap") is None:
        return "debootstrap is not installed and no cached rootfs exists"
    return ""


def _worker() -> int:
    m = re.search(r"(\d+)$", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(m.group(1)) if m else 0


class TestbedFactory:
    """Creates testbeds in free slots and tears all of them down at the end."""

    __test__ = False  # not a test class

    def __init__(self, workdir: str = WORKDIR) -> None:
        self.workdir = Path(workdir)
        self.created: List[Testbed] = []
        self._locks: list = []

    def _slot(self) -> tuple:
        (self.workdir / "slots").mkdir(parents=True, exist_ok=True)
        start = (_worker() * 8) % SLOTS
        for k in range(SLOTS):
            slot = (start + k) % SLOTS
            f = open(self.workdir / "slots" / f"{slot}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self._locks.append(f)  # held until the session ends: the slot is ours
            return f"t{slot}", f"198.18.{slot}"
        raise RuntimeError("no free testbed slot")

    def new(self, n_hosts: int = 3, **kw) -> Testbed:
        """A testbed in a free slot, not booted yet, already registered for teardown."""
        prefix, net = os.environ.get("K8S_TB_PREFIX"), os.environ.get("K8S_TB_NET")
        if not (prefix and net) or self.created:
            prefix, net = self._slot()
        tb = Testbed(prefix, net, n_hosts, str(self.workdir), **kw)
        self.created.append(tb)  # registered before the first step: teardown copes with partial setup
        return tb

    def create(self, n_hosts: int = 3, **kw) -> Testbed:
        """A booted testbed with n_hosts hosts; torn down at session end (or earlier by the test)."""
        tb = self.new(n_hosts, **kw)
        try:
            tb.up()
        except Exception:
            save_logs(tb, "up-failed")
            raise
        return tb

    def close(self) -> None:
        for tb in reversed(self.created):
            tb.down()
        for f in self._locks:
            f.close()


def save_logs(tb: Testbed, label: str) -> Path:
    """Keep the hosts' logs of a failure (journals are volatile: read them before teardown)."""
    base = Path(os.environ.get("K8S_TB_LOGS", f"{WORKDIR}/logs"))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:80]
    dest = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{tb.prefix}-{safe}"
    tb.save_logs(dest)
    print(f"\ntestbed logs saved in {dest}")
    return dest


@pytest.fixture(scope="session")
def testbed_factory():
    """Factory of booted testbeds; every testbed it made is torn down at session end."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    factory = TestbedFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def testbed(testbed_factory):
    """Three booted hosts h1..h3, shared by the whole session."""
    return testbed_factory.create(3)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(autouse=True)
def _testbed_logs_on_failure(request):
    """After a failed test that used a testbed, save every live testbed's logs."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or "testbed_factory" not in request.fixturenames:
        return
    factory = request.getfixturevalue("testbed_factory")
    for tb in factory.created:
        if tb.rundir.exists():
            save_logs(tb, request.node.name)


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e/ is an e2e test (select or deselect with -m e2e)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
