"""SSH host keys: learned on first contact or required up front, never ignored; changed keys refused.

The installer sends the CA, service-account and etcd keys over these connections, so ssh always runs
with `StrictHostKeyChecking=yes` against one known_hosts file (by default `<state>/known_hosts`). Two modes:
- `accept-new` (default): a host missing from the file is learned on first contact, as OpenSSH's own
  accept-new does, and the fingerprint of every learned key is printed; a host whose key differs from
  the recorded one is refused.
- `strict`: only hosts already in the file are accepted.
One implementation for every OpenSSH version (CentOS 7's 7.4 has no accept-new): `ssh-keyscan` reads
the keys of an unknown host, `ssh-keygen -lf` prints their fingerprints, they are appended (unhashed, so
`ssh-keygen -R` and a reader both work), and only then does ssh connect, with strict checking.
Learning connects straight to address:port: a host reached through a ProxyJump must be recorded first.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, List

from contract.errors import EXIT_INVALID, Error
from installer.hosts.connector import tail

MODES = ("accept-new", "strict")
DEFAULT_MODE = "accept-new"
CHANGED, UNKNOWN = "changed", "unknown"  # HostKeyError.reason

# ssh's stable marker for any host-key refusal (unknown with strict checking, or changed): OpenSSH prints
# it as its fatal message in every version the installer supports, and exit status 255 alone does not say
# why ssh failed. This is the one place that reads ssh's text about host keys.
_REFUSED = "Host key verification failed."

_lock = threading.Lock()  # parallel hosts append to one file


class HostKeyError(Error):
    """ssh refused a host's key; reason is CHANGED (differs from the recorded one) or UNKNOWN (strict)."""

    def __init__(self, message: str, *, reason: str, **kw) -> None:
        super().__init__(message, **kw)
        self.reason = reason


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise Error(f"unknown host key mode {mode!r}", context="reading the command line",
                    hint=f"--host-keys takes one of: {', '.join(MODES)}", exit_code=EXIT_INVALID)
    return mode


def known_name(address: str, port: int) -> str:
    """How known_hosts names a host: the address, or [address]:port off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


def host_key_refused(rc: int, stderr: str) -> bool:
    """Did ssh fail because it refused the host's key?"""
    return rc == 255 and _REFUSED in stderr


@dataclass
class HostKeys:
    """The host key policy of a set of connectors: one known_hosts file, one mode, where to report."""

    file: str
    mode: str = DEFAULT_MODE
    out: Callable[[str], None] = field(default=lambda line: None, repr=False)
    keyscan: str = "ssh-keyscan"
    keygen: str = "ssh-keygen"

    def __post_init__(self) -> None:
        check_mode(self.mode)
        self.file = os.path.expanduser(self.file)

    def ssh_options(self) -> List[str]:
        """ssh options enforcing the file: never StrictHostKeyChecking=no or accept-new."""
        return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.file}",
                "-o", "CheckHostIP=no"]

    def is_known(self, address: str, port: int) -> bool:
        """Whether the file has a key for the host (hashed or not)."""
        if not os.path.isfile(self.file):
            return False
        p = self._run([self.keygen, "-F", known_name(address, port), "-f", self.file], "looking up")
        return p.returncode == 0 and any(ln and not ln.startswith("#") for ln in p.stdout.splitlines())

    def prepare(self, name: str, address: str, port: int, timeout: float) -> bool:
        """Before connecting: learn an unknown host's keys in accept-new mode; whether the host is known."""
        if self.is_known(address, port):
            return True
        if self.mode != "accept-new":
            return False
        self.learn(name, address, port, timeout)
        return True

    def learn(self, name: str, address: str, port: int, timeout: float) -> List[str]:
        """Scan the host's keys, append them to the file, print their fingerprints; the fingerprints."""
        kn = known_name(address, port)
        what = f"learning the ssh host key of {name}"
        p = self._run([self.keyscan, "-p", str(port), "-T", str(max(1, int(timeout))), address], what,
                      timeout=timeout + 30)
        lines = [ln for ln in p.stdout.splitlines() if ln.split(" ", 1)[0] == kn and len(ln.split()) >= 3]
        if not lines:
            raise Error(f"{name}: cannot connect over ssh to {address}:{port}: no host key could be read",
                        context=what,
                        details=tail(p.stderr),
                        hint=f"check the address and ssh port of {name} in the inventory, that sshd runs there, "
                             f"and that no firewall blocks port {port}")
        text = "".join(ln + "\n" for ln in lines)
        fingerprints = self._fingerprints(text, name, what)
        with _lock:
            if self.is_known(address, port):  # another installer recorded it meanwhile
                return []
            self._append(text, what)
            if not self.is_known(address, port):
                raise Error(f"{name}: the learned host key was not recorded in {self.file}", context=what,
                            hint="pass --known-hosts a regular file this user can write (not /dev/null)")
        for fp in fingerprints:
            self.out(f"{name}: learned ssh host key (first contact), recorded in {self.file}: {fp}")
        return fingerprints

    def refused(self, name: str, address: str, port: int, stderr: str, known: bool) -> HostKeyError:
        """The Error for ssh refusing the host's key: changed (it was known) or unknown (strict mode)."""
        kn, where = known_name(address, port), f"{address}:{port}"
        if known:
            return HostKeyError(
                f"{name}: the ssh host key of {where} has CHANGED: it differs from the one in {self.file}",
                reason=CHANGED, context=f"connecting to {name} over ssh", details=tail(stderr),
                hint=f"do not go on unless you know why: if {name} was reinstalled, compare the fingerprint it "
                     f"shows now (`ssh-keyscan -p {port} {address} | ssh-keygen -lf -`) with the one on its "
                     f"console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then remove the old entry "
                     f"with `ssh-keygen -R '{kn}' -f {self.file}` and re-run")
        return HostKeyError(
            f"{name}: the ssh host key of {where} is not in {self.file} (--host-keys strict)",
            reason=UNKNOWN, context=f"connecting to {name} over ssh", details=tail(stderr),
            hint=f"record it after comparing its fingerprint with the one on the host's console: "
                 f"`ssh-keyscan -p {port} {address} > key; ssh-keygen -lf key; cat key >> {self.file}`; "
                 "or run with --host-keys accept-new to learn it on first contact")

    # -- helpers -------------------------------------------------------------------------------
    def _fingerprints(self, text: str, name: str, what: str) -> List[str]:
        with tempfile.NamedTemporaryFile("w", prefix="k8s-offline-hostkey.", suffix=".pub") as f:
            f.write(text)
            f.flush()
            p = self._run([self.keygen, "-l", "-f", f.name], what)
        fps = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        if p.returncode != 0 or not fps:
            raise Error(f"{name}: ssh-keygen cannot read the host key ssh-keyscan returned", context=what,
                        details=tail(p.stderr or text), hint="check the ssh client installation on this host")
        return fps

    def _append(self, text: str, what: str) -> None:
        if os.path.exists(self.file) and not os.path.isfile(self.file):
            raise Error(f"cannot record host keys in {self.file}: not a regular file", context=what,
                        hint="pass --known-hosts a regular file this user can write (not /dev/null)")
        parent = os.path.dirname(self.file)
        try:
            if parent:
                os.makedirs(parent, 0o700, exist_ok=True)
            fd = os.open(self.file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # other installer processes append to the same file
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        text = "\n" + text
                f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise Error(f"cannot write {self.file}: {e.strerror}", context=what,
                        hint="pass --known-hosts a file this user can write") from None

    def _run(self, argv: List[str], what: str, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: no answer within {timeout:.0f} s")
        except FileNotFoundError:
            raise Error(f"{argv[0]} is not installed", context=what,
                        hint="install the OpenSSH client on the control host (CentOS: openssh-clients)") from None
