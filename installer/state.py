"""The control host's state directory: unpacked bundle, journal of applied steps, pending restarts, reports.

Layout of <state>:
  pki/                 the site PKI (installer.pki)
  bundle/              the verified, unpacked bundle; bundle.json names its manifest digest and signer
  binaries/<digest>/   executables extracted from the bundle's release tarballs (by manifest digest)
  journal.jsonl        one JSON line per executed step (append-only; what was applied, when, by which run)
  pending.json         units whose files changed but that were not restarted yet (an apply stopped midway)
  etcd-members.json    the etcd members (name: address) the cluster was formed with
  report.json/.txt     the evidence report of the last apply
  known_hosts          ssh host keys of the hosts (learned on first contact unless --host-keys strict)
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

BUNDLE_DIR = "bundle"
BUNDLE_INFO = "bundle.json"
JOURNAL = "journal.jsonl"
PENDING = "pending.json"
ETCD_MEMBERS = "etcd-members.json"
REPORT_JSON = "report.json"
REPORT_TEXT = "report.txt"
KNOWN_HOSTS = "known_hosts"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace path with data (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class StateDir:
    """Paths and small records inside the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> StateDir:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # holds the CA key and passwords
        return self

    @property
    def bundle_dir(self) -> Path:
        return self.root / BUNDLE_DIR

    @property
    def bundle_info_path(self) -> Path:
        return self.root / BUNDLE_INFO

    def bundle_info(self) -> Optional[dict]:
        """What the unpacked bundle was verified as, or None."""
        try:
            return json.loads(self.bundle_info_path.read_text())
        except (OSError, ValueError):
            return None

    def set_bundle_info(self, info: dict) -> None:
        write_atomic(self.bundle_info_path, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())

    @property
    def known_hosts_path(self) -> Path:
        """The ssh known_hosts file of the commands that connect (unless --known-hosts names another)."""
        return self.root / KNOWN_HOSTS

    def binaries_dir(self, digest: str) -> Path:
        return self.root / "binaries" / digest[:16]

    @property
    def journal(self) -> Journal:
        return Journal(self.root / JOURNAL)

    @property
    def pending(self) -> Pending:
        return Pending(self.root / PENDING)

    def etcd_members(self) -> Optional[Dict[str, str]]:
        """{name: address} of the etcd cluster as it was formed (first healthy etcd gate), or None before."""
        try:
            data = json.loads((self.root / ETCD_MEMBERS).read_text())
        except (OSError, ValueError):
            return None
        members = data.get("members") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in members.items()} if isinstance(members, dict) else None

    def set_etcd_members(self, members: Dict[str, str]) -> None:
        write_atomic(self.root / ETCD_MEMBERS,
                     (json.dumps({"members": members}, indent=2, sort_keys=True) + "\n").encode())

    def write_report(self, data: dict, text: str) -> Tuple[Path, Path]:
        """The evidence report of a run, as JSON and as text."""
        j, t = self.root / REPORT_JSON, self.root / REPORT_TEXT
        write_atomic(j, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())
        write_atomic(t, (text.rstrip("\n") + "\n").encode())
        return j, t


class Journal:
    """Append-only JSON lines: run start/end and every executed step with its outcome."""

    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]

    def record(self, event: str, **fields: object) -> None:
        line = dict(fields, event=event, run=self.run_id, t=round(self.clock(), 3))
        with open(self.path, "a") as f:  # one write per line: lines of parallel hosts never interleave
            f.write(json.dumps(line, sort_keys=True, default=str) + "\n")

    def entries(self) -> List[dict]:
        try:
            text = self.path.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a killed run
        return out

    def last_run(self) -> List[dict]:
        """The entries of the most recent run."""
        entries = self.entries()
        if not entries:
            return []
        run = entries[-1].get("run")
        return [e for e in entries if e.get("run") == run]


class Pending:
    """{host: units} that must still be restarted because their files changed in an earlier, unfinished run."""

    _lock = threading.Lock()  # hosts run in parallel threads: read-modify-write must not interleave

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Dict[str, Set[str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {h: set(u) for h, u in data.items() if u}

    def _save(self, data: Dict[str, Set[str]]) -> None:
        clean = {h: sorted(u) for h, u in sorted(data.items()) if u}
        write_atomic(self.path, (json.dumps(clean, indent=2) + "\n").encode())

    def add(self, host: str, units: Iterable[str]) -> None:
        with self._lock:
            data = self.load()
            data.setdefault(host, set()).update(units)
            self._save(data)

    def done(self, host: str, unit: str) -> None:
        with self._lock:
            data = self.load()
            if unit in data.get(host, set()):
                data[host].discard(unit)
                self._save(data)
