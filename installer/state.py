"""The control host's state directory: unpacked bundle, journal of applied steps, pending restarts, reports.

Layout of <state>:
  pki/                 the site PKI (installer.pki)
  bundle/              the verified, unpacked bundle; bundle.json names its manifest digest and signer
  binaries/<digest>/   executables extracted from the bundle's release tarballs (by manifest digest)
  journal.jsonl        one JSON line per executed step (append-only; what was applied, when, by which run)
  pending.json         units whose files changed but that were not restarted yet (an apply stopped midway)
  etcd-members.json    the etcd members (name: address) the cluster was formed with
  backups/             etcd snapshots (etcd-<UTC time>-<revision>.db, 0600) and their sidecars (installer.etcd_backup)
  hosts.json           every host an apply managed (its inventory entry), until remove-node forgets it
  applied.json         the bundle the last successful apply/upgrade converged to: its component versions and
                       per host the versions it runs (installer.versions; what upgrade compares with)
  report.json/.txt     the evidence report of the last apply
  known_hosts          ssh host keys of the hosts (learned on first contact unless --host-keys strict)

Every record is written atomically (write_atomic; the journal by whole appended lines). Reading fails closed: a
missing file means "none yet", but one that cannot be read or is not what was written is an Error naming the
file, what removing it would cost, and never a silent "none" (IF_REMOVED).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from contract.errors import Error

BUNDLE_DIR = "bundle"
BUNDLE_INFO = "bundle.json"
JOURNAL = "journal.jsonl"
PENDING = "pending.json"
ETCD_MEMBERS = "etcd-members.json"
REPORT_JSON = "report.json"
REPORT_TEXT = "report.txt"
KNOWN_HOSTS = "known_hosts"
HOSTS = "hosts.json"
APPLIED = "applied.json"

# What removing a state file on purpose costs: said in the error that refuses to guess around a damaged one.
IF_REMOVED = {
    BUNDLE_INFO: "the bundle is verified and unpacked again by the next apply (and `installer check` cannot "
                 "compare the registry's images until then)",
    PENDING: "pending restarts are forgotten: units whose files an unfinished run changed are not restarted, "
             "and addon manifests it wrote are not applied, until their files change again (restart them by hand)",
    ETCD_MEMBERS: "the membership guard is re-armed from the current inventory: its etcd members are recorded "
                  "as those the cluster was formed with after the next healthy etcd gate",
    JOURNAL: "the history of earlier runs is lost (resuming needs only pending.json)",
    APPLIED: "`installer upgrade` refuses until the next successful `installer apply` records the versions again "
             "(apply with the bundle the cluster runs: it changes nothing on a converged cluster), and the next "
             "report lists no version change",
    HOSTS: "remove-node cannot reach hosts already taken out of the inventory (the next apply records the "
           "inventory's hosts again)",
}


def state_file_error(path: Path, problem: str, doing: str) -> Error:
    """A state file that exists but cannot be used: never guessed around (fail closed)."""
    return Error(f"{path}: {problem}", context=doing,
                 hint=f"restore {path.name} from a backup of the state directory, or remove it on purpose: "
                      f"{IF_REMOVED[path.name]}")


def read_state_text(path: Path, doing: str) -> Optional[str]:
    """The text of a state file, or None when it does not exist; any other failure is an Error."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise state_file_error(path, f"cannot read it: {reason}", doing) from None


def read_state_json(path: Path, doing: str) -> Optional[Dict[str, Any]]:
    """A JSON state file's object, or None when the file does not exist."""
    text = read_state_text(path, doing)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise state_file_error(path, f"not valid JSON: {e}", doing) from None
    if not isinstance(data, dict):
        raise state_file_error(path, "not a JSON object", doing)
    return data


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
        """What the unpacked bundle was verified as, or None before the first unpack."""
        return read_state_json(self.bundle_info_path, "reading which bundle the state directory holds unpacked")

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
        path, doing = self.root / ETCD_MEMBERS, "reading the etcd members the cluster was formed with"
        data = read_state_json(path, doing)
        if data is None:
            return None
        members = data.get("members")
        if not isinstance(members, dict) or not all(isinstance(v, str) for v in members.values()):
            raise state_file_error(path, 'expected {"members": {name: address, ...}}', doing)
        return dict(members)

    def set_etcd_members(self, members: Dict[str, str]) -> None:
        write_atomic(self.root / ETCD_MEMBERS,
                     (json.dumps({"members": members}, indent=2, sort_keys=True) + "\n").encode())

    def hosts(self) -> Dict[str, Dict[str, Any]]:
        """{name: inventory entry} of every host an apply managed and remove-node did not forget yet."""
        path, doing = self.root / HOSTS, "reading the hosts earlier applies managed"
        data = read_state_json(path, doing)
        if data is None:
            return {}
        hosts = data.get("hosts")
        if not isinstance(hosts, dict) or not all(isinstance(v, dict) and "address" in v for v in hosts.values()):
            raise state_file_error(path, 'expected {"hosts": {name: {"address": ..., "roles": [...]}, ...}}', doing)
        return dict(hosts)

    def set_hosts(self, hosts: Dict[str, Dict[str, Any]]) -> None:
        write_atomic(self.root / HOSTS, (json.dumps({"hosts": hosts}, indent=2, sort_keys=True) + "\n").encode())

    @property
    def applied_path(self) -> Path:
        return self.root / APPLIED

    def applied(self) -> Optional[Dict[str, Any]]:
        """What the last successful apply converged to (installer.versions.applied_record), or None before."""
        path, doing = self.applied_path, "reading the versions the last successful apply recorded"
        data = read_state_json(path, doing)
        if data is None:
            return None
        hosts = data.get("hosts")
        if not (isinstance(data.get("kubernetes"), (str, type(None))) and isinstance(data.get("bundle"), dict)
                and isinstance(hosts, dict) and all(isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
                                                    for v in hosts.values())):
            raise state_file_error(path, 'expected {"bundle": {...}, "kubernetes": VERSION, "versions": {...}, '
                                         '"hosts": {name: {component: version}}}', doing)
        return data

    def set_applied(self, record: Dict[str, Any]) -> None:
        write_atomic(self.applied_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())

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

    _lock = threading.Lock()  # hosts run in parallel threads: the check of the last byte must not interleave

    def record(self, event: str, **fields: object) -> None:
        line = dict(fields, event=event, run=self.run_id, t=round(self.clock(), 3))
        data = (json.dumps(line, sort_keys=True, default=str) + "\n").encode()
        with self._lock, open(self.path, "a+b") as f:  # one write per line: lines never interleave
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data  # a killed run's torn line stays alone on its line
            f.write(data)  # append mode: at the end whatever the position

    def entries(self) -> List[dict]:
        """Every entry; [] before the first run. A line that is not a JSON object is skipped: a killed run can
        leave a torn one (record starts every entry on a line of its own, so the rest stays readable)."""
        text = read_state_text(self.path, "reading the journal of earlier runs") or ""
        out = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
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
        """{host: units} still to restart; {} when nothing is pending (no file)."""
        doing = "reading the restarts an earlier run left pending"
        data = read_state_json(self.path, doing)
        if data is None:
            return {}
        if not all(isinstance(u, list) and all(isinstance(x, str) for x in u) for u in data.values()):
            raise state_file_error(self.path, "expected {host: [unit, ...], ...}", doing)
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
