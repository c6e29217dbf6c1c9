"""Host keys and control sockets against a real sshd on 127.0.0.1 (our own child process, own host key).

- first contact learns the key and prints its fingerprint; a second connection just uses it;
- the sshd's host key swapped -> refused as CHANGED with the ssh-keygen -R hint, which then works;
- strict mode with an empty known_hosts -> refused as UNKNOWN;
- a SIGKILLed process's ControlMaster and socket directory are removed by the next run's start-up.
"""

from __future__ import annotations

import getpass
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from installer.hosts import control_dir
from installer.hosts import known_hosts as kh
from installer.hosts.ssh import SshConnector
from tests.fixtures.upstream import procs

SSHD = "/usr/sbin/sshd"
if not os.path.exists(SSHD):
    pytest.skip("needs sshd (Debian: openssh-server; its service need not run)", allow_module_level=True)


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


class Sshd:
    """sshd -D on 127.0.0.1:<free port>, accepting one client key for the current user."""

    def __init__(self, d: Path) -> None:
        self.dir, self.port = d, procs.free_port()
        self.client = d / "client"
        keygen(self.client)
        self.proc = None
        self.host_key = None

    def start(self, host_key: str) -> None:
        self.host_key = self.dir / host_key
        if not self.host_key.exists():
            keygen(self.host_key)
        cfg = self.dir / "sshd_config"
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.client}.pub", "StrictModes no", "UsePAM no", "PidFile none",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "LogLevel ERROR", ""]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", 0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc = procs.spawn([SSHD, "-D", "-e", "-f", str(cfg)], self.dir / "sshd.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_pid(self.proc.pid, str(self.dir / "sshd_config"))
            self.proc = None

    def connector(self, known_hosts: Path, **kw) -> SshConnector:
        return SshConnector("h1", "127.0.0.1", user=getpass.getuser(), port=self.port, key=str(self.client),
                            known_hosts=str(known_hosts), connect_timeout=5, **kw)


@pytest.fixture()
def sshd(tmp_path):
    s = Sshd(tmp_path)
    s.start("host_a")
    try:
        yield s
    finally:
        s.stop()


def test_first_contact_learns_the_key_and_prints_its_fingerprint(sshd, tmp_path):
    file, lines = tmp_path / "state" / "known_hosts", []
    with sshd.connector(file, out=lines.append) as c:
        assert c.run("echo ok").stdout == "ok\n"
    assert len(lines) == 1 and fingerprint(sshd.dir / "host_a.pub") in lines[0] and "h1" in lines[0]
    assert file.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    with sshd.connector(file, out=lines.append) as c:  # known now: connects, learns nothing
        assert c.run("echo again").stdout == "again\n"
    assert len(lines) == 1


def test_a_changed_host_key_is_refused_until_the_old_entry_is_removed(sshd, tmp_path):
    file = tmp_path / "known_hosts"
    with sshd.connector(file) as c:
        c.run("true")
    before = file.read_text()
    sshd.stop()
    sshd.start("host_b")  # same address and port, another key: a reinstalled host, or an impostor
    lines = []
    with sshd.connector(file, out=lines.append) as c:
        with pytest.raises(kh.HostKeyError) as e:
            c.run("true")
    err = e.value
    assert err.reason == kh.CHANGED and f"127.0.0.1:{sshd.port}" in err.message and "h1" in err.message
    assert "Host key verification failed." in err.details
    assert file.read_text() == before and lines == []
    # the hint's command, as the admin would run it after verifying the new key
    remove = err.hint.split("`ssh-keygen -R ", 1)[1].split("`", 1)[0]
    subprocess.run(["ssh-keygen", "-R", *shlex.split(remove)], check=True, capture_output=True)
    with sshd.connector(file, out=lines.append) as c:
        assert c.run("echo new").stdout == "new\n"
    assert len(lines) == 1 and fingerprint(sshd.dir / "host_b.pub") in lines[0]


def test_strict_refuses_a_host_not_in_known_hosts(sshd, tmp_path):
    file = tmp_path / "known_hosts"
    with sshd.connector(file, host_keys="strict") as c:
        with pytest.raises(kh.HostKeyError) as e:
            c.run("true")
    assert e.value.reason == kh.UNKNOWN and "--host-keys accept-new" in e.value.hint
    assert not file.exists()
    subprocess.run(f"ssh-keyscan -p {sshd.port} 127.0.0.1 > {file}", shell=True, check=True,
                   capture_output=True)  # what the hint says, after checking the fingerprint
    with sshd.connector(file, host_keys="strict") as c:
        assert c.run("echo ok").stdout == "ok\n"


CHILD = """
import sys, time
from installer.hosts.ssh import SshConnector
c = SshConnector("h1", "127.0.0.1", user=sys.argv[1], port=int(sys.argv[2]), key=sys.argv[3],
                 known_hosts=sys.argv[4], connect_timeout=5)
c.connect()
print(c.control_path, c.master_pid, flush=True)
time.sleep(600)
"""


def test_the_next_run_removes_the_master_of_a_killed_run(sshd, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, getpass.getuser(), str(sshd.port), str(sshd.client),
                              str(tmp_path / "known_hosts")], stdout=subprocess.PIPE, text=True,
                             cwd=str(procs.REPO_ROOT), env=procs.clean_env())
    try:
        path, pid = child.stdout.readline().split()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    master, run = int(pid), os.path.dirname(path)
    time.sleep(0.3)
    assert procs.alive(master) and os.path.exists(path), "SIGKILL leaves the master and its socket"
    with sshd.connector(tmp_path / "known_hosts") as c:
        assert c.control_path.startswith(control_dir.base_dir())  # a new run's start-up sweeps
        assert not os.path.exists(run)
        deadline = time.monotonic() + 5
        while procs.alive(master) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.alive(master)
        assert c.run("echo still").stdout == "still\n"
    assert control_dir.base_dir() in path
