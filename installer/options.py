"""What the installer's commands are given: collaborators and knobs (Options), the ssh connector factory, the
proxy-free session, and the per-run pool of host connections.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import requests

from contract.errors import Error
from installer import harbor_install
from installer.hosts.connector import DEFAULT_PARALLEL, Connector, Result
from installer.inventory import Host, Inventory

Out = Callable[[str], None]


@dataclass
class Options:
    """Injected collaborators and knobs (tests pass their own)."""

    connector_for: Callable[[Inventory, Host], Connector]
    session: requests.Session
    out: Out = lambda line: None
    max_parallel: int = DEFAULT_PARALLEL  # hosts handled at once (--jobs)
    gate_timeout: float = 120.0
    harbor_timeout: float = 600.0  # Harbor's containers take minutes after install.sh on a real host
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    checks: bool = True  # run the cluster checks after executing


def ssh_connectors(known_hosts: str, host_keys: str,
                   out: Out = lambda line: None) -> Callable[[Inventory, Host], Connector]:
    """The default connector factory: OpenSSH with the inventory's settings and the host key policy."""
    from installer.hosts.known_hosts import check_mode
    from installer.hosts.ssh import SshConnector

    check_mode(host_keys)

    def make(inv: Inventory, host: Host) -> Connector:
        return SshConnector.for_host(inv, host, known_hosts=known_hosts, host_keys=host_keys, out=out)

    return make


def default_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # the air-gapped site has no proxy for cluster addresses
    return s


class Hosts:
    """Open connectors by host name, created on first use, closed together: one connection (an ssh master) per
    host for a whole run, the checks after it included (`connector_for`).

    open_early(names) starts the connections in the background (the ssh handshakes, about a quarter second of
    CPU each on both ends, overlap the control host's own work: bundle check, PKI, rendering); the first use of
    a host waits for its handshake and raises its connection error."""

    def __init__(self, inv: Inventory, opts: Options) -> None:
        self.inv, self.opts = inv, opts
        self._conns: Dict[str, Connector] = {}
        self._lock = threading.Lock()  # hosts are handled in parallel threads
        self._early: Dict[str, Future] = {}
        self._pool: Optional[ThreadPoolExecutor] = None

    def _conn(self, name: str) -> Connector:
        with self._lock:
            if name not in self._conns:
                reg = harbor_install.registry_host(self.inv)
                host = reg if reg is not None and name == reg.name else self.inv.host(name)
                self._conns[name] = self.opts.connector_for(self.inv, host)
            return self._conns[name]

    def __getitem__(self, name: str) -> Connector:
        conn = self._conn(name)
        early = self._early.get(name)
        if early is not None:
            early.result()  # this host's connection error, if its early connect failed
        return conn

    def open_early(self, names: Sequence[str]) -> None:
        """Connect to these hosts in the background, max_parallel at once (connectors without connect(): none)."""
        todo = [(n, getattr(self._conn(n), "connect", None)) for n in names if n not in self._early]
        todo = [(n, connect) for n, connect in todo if callable(connect)]
        if not todo:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(self.opts.max_parallel, len(todo))),
                                            thread_name_prefix="connect")
        for n, connect in todo:
            self._early[n] = self._pool.submit(connect)

    def connector_for(self, inv: Inventory, host: Host) -> Connector:
        """A connector factory (Options.connector_for's signature) lending this pool's open connections: what
        code given a factory closes stays open for the rest of the run; another inventory gets its own."""
        if inv is not self.inv:
            return self.opts.connector_for(inv, host)
        return Borrowed(self[host.name])

    def close(self) -> None:
        """Close every connection, all at once (an early connect still under way is waited for first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # connects not begun are not begun
            self._pool = None
        self._early.clear()
        conns = list(self._conns.values())
        self._conns.clear()

        def close_one(c: Connector) -> None:
            try:
                c.close()
            except Exception:  # closing must never hide the real outcome
                pass

        if len(conns) > 1:
            with ThreadPoolExecutor(max_workers=min(len(conns), max(1, self.opts.max_parallel))) as pool:
                list(pool.map(close_one, conns))
        else:
            for c in conns:
                close_one(c)


class Borrowed:
    """A connector lent by a pool (Hosts): every call goes to it, close() is the pool's."""

    def __init__(self, conn: Connector) -> None:
        self.conn = conn
        self.name = conn.name

    def run(self, cmd, **kw) -> Result:
        return self.conn.run(cmd, **kw)

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None:
        self.conn.put(path, content, mode, owner, group)

    def put_file(self, path: str, local: Path, mode: int, owner: str = "root", group: str = "root") -> None:
        self.conn.put_file(path, local, mode, owner, group)

    def get(self, path: str) -> Optional[bytes]:
        return self.conn.get(path)

    def close(self) -> None:
        """Nothing: the pool closes the connection at the end of the run."""


def first_line(e: BaseException) -> str:
    if isinstance(e, Error):
        return e.message + (f" ({'; '.join(e.details[-2:])})" if e.details else "")
    return f"{type(e).__name__}: {e}"
