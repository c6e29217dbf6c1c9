"""Local connector: the same protocol on this machine, through subprocess (control host, tests)."""

from __future__ import annotations

import os
import subprocess
from typing import Optional, Tuple

from contract.errors import Error
from installer.hosts.connector import (
    KILL_GRACE,
    Command,
    ShellConnector,
    Stdin,
    feeding,
    timeout_error,
)


class LocalConnector(ShellConnector):
    """Runs commands with /bin/sh on this machine; sudo only when asked and not already root."""

    def __init__(self, name: str = "localhost", *, sudo: bool = False) -> None:
        self.name = name
        self.is_root = os.geteuid() == 0
        self.user = "root" if self.is_root else os.environ.get("USER", str(os.geteuid()))
        self.sudo = sudo

    def _run_bytes(self, cmd, *, sudo=None, timeout=None, input=None):
        if self.is_root:
            sudo = False  # root needs no sudo, and a minimal control host may not even have it
        return super()._run_bytes(cmd, sudo=sudo, timeout=timeout, input=input)

    def _exec(self, line: str, stdin: Stdin, timeout: Optional[float],
              cmd: Command) -> Tuple[int, bytes, bytes]:
        try:
            with feeding(stdin) as feed:
                p = subprocess.run(["/bin/sh", "-c", line], **feed,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=None if timeout is None else timeout + KILL_GRACE)
        except subprocess.TimeoutExpired:
            raise timeout_error(self.name, cmd, timeout) from None
        except OSError as e:
            raise Error(f"{self.name}: cannot start /bin/sh: {e}", hint="is this a POSIX system?") from None
        return p.returncode, p.stdout, p.stderr
