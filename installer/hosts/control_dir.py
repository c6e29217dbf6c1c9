"""Where the SSH ControlMaster sockets live, and the clean-up of those a killed run left behind.

Layout: /tmp/k8s-offline-ssh.<uid>/<pid>.<start time>/s<n>
- one private base directory per user (0700, owned by us: checked, never followed through a symlink);
- one run directory per installer process, named after its owner: the PID and the process's start time
  (/proc/<pid>/stat field 22), so a recycled PID is not taken for the owner;
- one socket per connector (a counter, so two connectors for one host never share a master).
Paths stay short (about 45 bytes; a Unix socket path is limited to ~104).

A run that ends normally closes its masters and removes its directory (atexit). A SIGKILLed run cannot:
its masters would live up to ControlPersist seconds and its directory forever. So whenever a connector
takes a socket path, the run directories whose owner is gone are swept: every master found there is
asked to exit (`ssh -O exit -o ControlPath=...`), then the directory is removed.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import stat
import subprocess
import threading
from typing import Dict, List, Optional, Tuple

from contract.errors import Error

BASE_PARENT = "/tmp"
_lock = threading.Lock()
_sweeping = threading.Lock()
_runs: Dict[str, Tuple[int, str]] = {}  # parent -> (pid, run dir) of this process
_counter = itertools.count(1)
_at_exit: List[bool] = []  # whether remove_own is registered


def base_dir(parent: str = BASE_PARENT) -> str:
    return os.path.join(parent, f"k8s-offline-ssh.{os.geteuid()}")


def start_time(pid: int) -> Optional[str]:
    """The start time of a live (non-zombie) process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; fields[0] is field 3


def owner_alive(run_name: str) -> bool:
    """Whether the process a run directory is named after (`<pid>.<start time>`) still runs."""
    pid, _, started = run_name.partition(".")
    if not pid.isdigit() or not started:
        return False
    return start_time(int(pid)) == started


def _private_base(parent: str) -> str:
    """The per-user base directory, created 0700; refused when someone else could use it."""
    base = base_dir(parent)
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise _base_error(base, f"cannot create it: {e.strerror}") from None
    if not _is_private(base):
        raise _base_error(base, "it is not a private directory of this user (a symlink, another owner, "
                                "or open to others)")
    return base


def _is_private(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _base_error(base: str, why: str) -> Error:
    return Error(f"cannot use {base} for the ssh control sockets: {why}",
                 context="preparing the ssh connections",
                 hint=f"remove {base} (it only ever holds sockets of this installer) and re-run")


def socket_path(parent: str = BASE_PARENT, ssh: str = "ssh") -> str:
    """A fresh socket path in this process's run directory (created, and stale runs swept, first)."""
    sweep(parent, ssh)
    with _lock:
        pid = os.getpid()
        run = _runs.get(parent)
        if run is None or run[0] != pid or not os.path.isdir(run[1]):  # a forked child gets its own
            path = os.path.join(_private_base(parent), f"{pid}.{start_time(pid)}")
            os.makedirs(path, 0o700, exist_ok=True)
            if not _at_exit:
                atexit.register(remove_own)
                _at_exit.append(True)
            run = _runs[parent] = (pid, path)
        return os.path.join(run[1], f"s{next(_counter)}")


def sweep(parent: str = BASE_PARENT, ssh: str = "ssh") -> List[str]:
    """Stop the masters of runs whose owner is gone and remove their directories; the ones removed."""
    base = base_dir(parent)
    if not _sweeping.acquire(blocking=False):
        return []  # another thread of this process is sweeping right now
    try:
        if not _is_private(base):
            return []  # missing, or not ours: socket_path refuses it with an error
        try:
            names = os.listdir(base)
        except OSError:
            return []
        removed = []
        for name in sorted(names):
            run = os.path.join(base, name)
            if owner_alive(name) or os.path.islink(run) or not os.path.isdir(run):
                continue
            stop_masters(run, ssh)
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run)
        return removed
    finally:
        _sweeping.release()


def stop_masters(run: str, ssh: str = "ssh") -> None:
    """Ask the master behind every socket of a run directory to exit."""
    try:
        entries = os.listdir(run)
    except OSError:
        return
    for entry in entries:
        path = os.path.join(run, entry)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        exit_master(path, ssh)


def exit_master(path: str, ssh: str = "ssh") -> None:
    """`ssh -O exit` on one control socket (the host name is a placeholder: the socket decides)."""
    try:
        subprocess.run([ssh, "-o", f"ControlPath={path}", "-O", "exit", "k8s-offline-stale-master"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass  # a master that does not answer dies after ControlPersist; its socket goes with the directory
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_own(ssh: str = "ssh") -> None:
    """At exit: stop masters a connector did not close, remove this process's run directories."""
    with _lock:
        for parent, (pid, run) in list(_runs.items()):
            if pid == os.getpid():
                stop_masters(run, ssh)
                shutil.rmtree(run, ignore_errors=True)
                del _runs[parent]
