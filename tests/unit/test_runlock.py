"""One run per state directory: a second apply refuses at once naming the holder; the lock dies with its process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from installer import runlock

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
# holds the lock, starts a child that outlives it (as an ssh ControlMaster would), says so, then waits
HOLDER = """
import subprocess, sys, time
from installer import runlock
with runlock.hold(sys.argv[1], "apply"):
    child = subprocess.Popen(["sleep", "60"])
    print(child.pid, flush=True)
    if sys.argv[2] == "wait":
        time.sleep(60)
"""


class Holder:
    """A process holding the lock of `state` (it and its child are ended by PID in stop())."""

    def __init__(self, state: Path, mode: str = "wait") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state), mode], stdout=subprocess.PIPE,
                                     text=True, env=ENV, cwd=ROOT)
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"holder did not start: {line!r}"
        self.child = int(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        try:
            os.kill(self.child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def holder(tmp_path):
    started = []

    def start(state: Path, mode: str = "wait") -> Holder:
        h = Holder(state, mode)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def test_second_run_refuses_at_once_naming_the_holder(tmp_path, holder):
    state = tmp_path / "state"
    h = holder(state)
    t = time.monotonic()
    with pytest.raises(runlock.StateLocked) as e:
        with runlock.hold(state, "certs renew"):
            pytest.fail("the lock was taken twice")
    assert time.monotonic() - t < 0.5  # at once: no waiting for the holder
    assert e.value.holder["pid"] == h.proc.pid and e.value.holder["host"] == socket.gethostname()
    assert e.value.holder["command"] == "apply"
    text = e.value.render()
    assert f"is in use by PID {h.proc.pid} on host {socket.gethostname()}, started {e.value.holder['started']}" \
        in text
    assert "while: starting installer certs renew" in text and "hint: wait for that run" in text


def test_sigkilled_holder_leaves_a_stale_file_that_is_no_lock(tmp_path, holder):
    state = tmp_path / "state"
    h = holder(state)
    h.kill()  # its child (sleep) still runs: it must not have inherited the lock
    assert os.path.exists(f"/proc/{h.child}")
    stale = runlock.read_holder(runlock.lock_path(state))
    assert stale["pid"] == h.proc.pid  # the record stays behind ...
    with runlock.hold(state, "apply") as mine:  # ... and is no lock
        assert mine["pid"] == os.getpid()
        assert json.loads(runlock.lock_path(state).read_text())["pid"] == os.getpid()
    assert runlock.lock_path(state).read_text() == ""  # released cleanly: no record left


def test_a_finished_holder_releases_it(tmp_path, holder):
    state = tmp_path / "state"
    h = holder(state, mode="exit")
    assert h.proc.wait(timeout=10) == 0
    with runlock.hold(state, "apply"):
        pass


def test_record_written_late_is_waited_for_briefly_then_reported_unknown(tmp_path):
    import fcntl

    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(runlock.lock_path(state), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, but no record (yet)
    try:
        naps = []
        with pytest.raises(runlock.StateLocked) as e:
            with runlock.hold(state, "apply", sleep=naps.append):
                pass
        assert "in use by another process (it has not written its record yet)" in e.value.message
        assert naps and sum(naps) <= runlock.RECORD_WAIT + 0.1
    finally:
        os.close(fd)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "installer.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=60)


@pytest.mark.parametrize("command", [["apply"], ["add-node", "k8s-node1"], ["certs", "renew"]])
def test_cli_refuses_without_a_traceback_and_plan_and_check_are_not_locked(tmp_path, holder, command):
    state = tmp_path / "state"
    h = holder(state)
    r = _cli(*command, "-b", str(tmp_path / "b.tar.zst"), "--pub", str(tmp_path / "b.pub"), "-i",
             "inventory.example.yaml", "--state", str(state))
    assert r.returncode == 1, r.stderr
    assert f"error: the state directory {state} is in use by PID {h.proc.pid}" in r.stderr
    name = "certs renew" if command[0] == "certs" else command[0]
    assert f"while: starting installer {name}" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    # plan does not take the lock: it gets past it (and fails on the missing bundle instead)
    r = _cli("plan", "-b", str(tmp_path / "b.tar.zst"), "--pub", str(tmp_path / "b.pub"), "-i",
             "inventory.example.yaml", "--state", str(state))
    assert r.returncode == 1 and "in use by" not in r.stderr and "Traceback" not in r.stderr


def test_render_and_seed_from_the_inventory_take_it_too(tmp_path, holder):
    state = tmp_path / "state"
    h = holder(state)
    r = _cli("render", "-i", "inventory.example.yaml", "--out", str(tmp_path / "out"), "--state", str(state))
    assert r.returncode == 1 and f"in use by PID {h.proc.pid}" in r.stderr
    assert not (tmp_path / "out").exists() and not (state / "pki").exists()
    r = _cli("seed", str(tmp_path / "b.tar.zst"), "--pub", str(tmp_path / "b.pub"), "-i", "inventory.example.yaml",
             "--state", str(state))
    assert r.returncode == 1 and f"in use by PID {h.proc.pid}" in r.stderr and "Traceback" not in r.stderr
