"""SSH connector: the system OpenSSH client, one multiplexed master connection per host (ControlMaster).

Why the `ssh` binary rather than paramiko or asyncssh:
- The control host is CentOS 7 (OpenSSH 7.4, in every install incl. minimal) and the installer may
  run as the static PyInstaller executable. A pure-Python SSH library would add native wheels
  (bcrypt, pynacl, cryptography's OpenSSL) to bundle and sign; the ssh client is already there and
  is the one the site's admins debug with.
- It honours what the site already configured: ~/.ssh/config (ProxyJump, per-host keys), ssh-agent,
  known_hosts, every key type and cipher the site's sshd accepts. paramiko lags on new key types
  and ignores most of ssh_config.
- Speed of many small commands: with ControlMaster a command is a new channel on an open
  connection (a few ms: one fork+exec of `ssh`, no key exchange). That is paramiko's speed too,
  without threads around a library that is not thread-safe per transport.
- Sudo for non-root users: the command line is wrapped in `sudo -n -- sh -c '...'`; `-n` fails fast
  ("a password is required") instead of hanging, and becomes an Error with a NOPASSWD hint.
- Per-host user, port, key and connect timeout come from the inventory (`-l`, `-p`, `-i`,
  `ConnectTimeout`); `BatchMode=yes` so nothing ever prompts.
- Timeouts: the remote side runs the command under coreutils `timeout` and we wait a little longer
  locally, so a hung command is stopped on the host too.
- Reconnect: before each command the master's PID is checked; a dropped connection (sshd restarted,
  network blip: ServerAlive* notices within ~15 s) is re-established transparently for the next
  command. A command whose connection dropped while it ran is not retried (it may have run):
  it raises an Error; the executor's steps are idempotent, so re-running is safe.
- Host keys: always `StrictHostKeyChecking=yes` against one known_hosts file; unknown hosts are
  learned first in accept-new mode (installer.hosts.known_hosts), changed keys are refused.
The price: a dependency on /usr/bin/ssh on the control host (documented in the prerequisites) and
a Unix socket per connector in a per-run directory that the next run sweeps if this one was killed
(installer.hosts.control_dir).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence, Tuple

from contract.errors import Error
from installer.hosts import control_dir
from installer.hosts.connector import (
    KILL_GRACE,
    Command,
    ShellConnector,
    Stdin,
    feeding,
    run_on,
    short,
    tail,
    timeout_error,
)
from installer.hosts.known_hosts import DEFAULT_MODE, HostKeys, host_key_refused

__all__ = ["SshConnector", "run_on", "connect", "ssh_version"]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"  # ssh's own, for connectors made without a known_hosts file

# ssh exits 255 for its own errors; these say the session never started (safe to retry after reconnect)
_MUX_FAILED = re.compile(r"(Control socket connect|mux_client_hello_exchange|master hello exchange|"
                         r"mux_client_request_session|ControlSocket .* already exists)")
_DROPPED = re.compile(r"(closed by remote host|Connection reset|Broken pipe|"
                      r"Timeout, server .* not responding|Connection to .* closed)")


@functools.lru_cache(maxsize=None)
def ssh_version(ssh: str = "ssh") -> Tuple[int, int]:
    """(major, minor) of the OpenSSH client, (0, 0) if unknown."""
    try:
        p = subprocess.run([ssh, "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", p.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead


class SshConnector(ShellConnector):
    """One host over SSH: a persistent master connection, each command a channel on it."""

    def __init__(self, name: str, address: str, *, user: str = "root", port: int = 22,
                 key: Optional[str] = None, sudo: Optional[bool] = None, connect_timeout: float = 10.0,
                 known_hosts: Optional[str] = None, host_keys: str = DEFAULT_MODE,
                 out: Callable[[str], None] = lambda line: None, options: Sequence[str] = (),
                 persist: int = 300, ssh: str = "ssh") -> None:
        self.name, self.address, self.user, self.port = name, address, user, port
        self.key = os.path.expanduser(key) if key else None
        self.sudo = (user != "root") if sudo is None else sudo
        self.connect_timeout = connect_timeout
        self.host_keys = HostKeys(known_hosts or DEFAULT_KNOWN_HOSTS, host_keys, out)
        self.options = tuple(options)
        self.persist = persist
        self.ssh = ssh
        self._path: Optional[str] = None
        self._master_pid: Optional[int] = None
        self._lock = threading.Lock()

    @classmethod
    def for_host(cls, inventory, host, **kw) -> "SshConnector":
        """Connector for an inventory Host, with the host's ssh settings or the inventory's defaults."""
        s = inventory.ssh_for(host)
        return cls(host.name, host.address, user=s.user, port=s.port, key=s.key, sudo=s.use_sudo,
                   connect_timeout=s.connect_timeout, **kw)

    # -- argv ----------------------------------------------------------------------------------
    @property
    def known_hosts(self) -> str:
        return self.host_keys.file

    @property
    def control_path(self) -> str:
        if self._path is None:
            # in this run's directory (short: a Unix socket path is limited to ~104 bytes)
            self._path = control_dir.socket_path(ssh=self.ssh)
        return self._path

    def base_argv(self) -> list:
        """ssh options shared by the master and every command (ours first: the first value given wins)."""
        argv = [self.ssh, "-p", str(self.port), "-l", self.user,
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                *self.host_keys.ssh_options(), "-o", "LogLevel=ERROR",
                "-o", f"ControlPath={self.control_path}"]
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        for opt in self.options:
            argv += ["-o", opt]
        return argv

    def command_argv(self, line: str) -> list:
        """Full argv running one command line through the master."""
        return self.base_argv() + ["-o", "ControlMaster=no", "-T", self.address, "--", line]

    # -- master connection ---------------------------------------------------------------------
    def connect(self) -> None:
        """Open (or re-open) the master connection; raise an Error that says why it failed."""
        with self._lock:
            if _pid_alive(self._master_pid):
                return
            known = self.host_keys.prepare(self.name, self.address, self.port, self.connect_timeout)
            sock = self.control_path
            if os.path.exists(sock):
                os.unlink(sock)  # stale socket of a master that died: ssh would refuse to create a new one
            argv = self.base_argv() + ["-o", "ControlMaster=yes", "-o", f"ControlPersist={self.persist}",
                                       "-N", "-f", self.address]
            # stderr to a file, not a pipe: the backgrounded master keeps it open, a pipe would never hit EOF
            with tempfile.TemporaryFile() as err:
                try:
                    rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                        timeout=self.connect_timeout + 20).returncode
                except subprocess.TimeoutExpired:
                    raise self._unreachable(f"no answer within {self.connect_timeout:.0f} s") from None
                except FileNotFoundError:
                    raise Error(f"{self.name}: the ssh client {self.ssh!r} is not installed",
                                hint="install the OpenSSH client on the control host "
                                     "(CentOS: openssh-clients)") from None
                err.seek(0)
                stderr = err.read().decode(errors="replace")
            if host_key_refused(rc, stderr):
                raise self.host_keys.refused(self.name, self.address, self.port, stderr, known)
            if rc != 0:
                raise self._unreachable(stderr)
            p = subprocess.run(self.base_argv() + ["-O", "check", self.address], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
            m = re.search(r"pid=(\d+)", p.stdout)
            self._master_pid = int(m.group(1)) if m else None

    def _unreachable(self, stderr: str) -> Error:
        where = f"{self.user}@{self.address}:{self.port}"
        if "Permission denied" in stderr:
            hint = (f"the host refused the key: check that {self.key or 'your key (ssh-agent, ~/.ssh)'} "
                    f"is in ~{self.user}/.ssh/authorized_keys on {self.name} and the inventory's ssh.user")
        else:
            hint = (f"check the address and ssh port of {self.name} in the inventory, that sshd runs there, "
                    f"and that no firewall blocks port {self.port}")
        return Error(f"{self.name}: cannot connect over ssh to {where}", context=f"connecting to {self.name}",
                     details=tail(stderr), hint=hint)

    @property
    def master_pid(self) -> Optional[int]:
        return self._master_pid if _pid_alive(self._master_pid) else None

    # -- the primitive -------------------------------------------------------------------------
    def _exec(self, line: str, stdin: Stdin, timeout: Optional[float],
              cmd: Command) -> Tuple[int, bytes, bytes]:
        for attempt in (1, 2):
            self.connect()
            try:  # a file is opened again for the second attempt: it starts at byte 0
                with feeding(stdin) as feed:
                    p = subprocess.run(self.command_argv(line), **feed,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       timeout=None if timeout is None else timeout + KILL_GRACE + 5)
            except subprocess.TimeoutExpired:
                raise timeout_error(self.name, cmd, timeout) from None
            if p.returncode != 255:
                return p.returncode, p.stdout, p.stderr
            err = p.stderr.decode(errors="replace")
            if _MUX_FAILED.search(err) and attempt == 1:
                self._forget_master()  # the session never started: reconnect and send it again
                continue
            if _DROPPED.search(err) or self._master_died():
                self._forget_master()
                raise Error(f"{self.name}: the ssh connection dropped while running: {short(cmd)}",
                            context=f"running a command on {self.name}", details=tail(err),
                            hint="the next command reconnects; the command may or may not have run: re-run "
                                 "(steps are idempotent)")
            return p.returncode, p.stdout, p.stderr  # the remote command itself exited 255
        raise AssertionError("unreachable")

    def _master_died(self, wait: float = 1.0) -> bool:
        """After exit status 255: did the connection die (the master exits a moment after its session)?"""
        deadline = time.monotonic() + wait
        while _pid_alive(self._master_pid):
            if time.monotonic() > deadline:
                return False  # the master lives: 255 was the remote command's own exit status
            time.sleep(0.05)
        return True

    def _forget_master(self) -> None:
        pid, self._master_pid = self._master_pid, None
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        """Stop the master connection and remove its socket."""
        if self._path is None:
            return
        if _pid_alive(self._master_pid):
            subprocess.run(self.base_argv() + ["-O", "exit", self.address], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            deadline = time.monotonic() + 2
            while _pid_alive(self._master_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            self._forget_master()
        self._master_pid = None
        try:
            os.unlink(self._path)
        except OSError:
            pass
        self._path = None


def connect(inventory, host, **kw) -> SshConnector:
    """An opened SshConnector for an inventory host (raises Error when unreachable)."""
    c = SshConnector.for_host(inventory, host, **kw)
    c.connect()
    return c
