"""etcd snapshots: `installer etcd snapshot`, and one before apply, add-node or certs renew change etcd or a master.

How a snapshot is taken (the way that is simplest to make correct and to verify):
- the member: the first one in inventory order whose /health answers healthy over TLS from the control host
  (installer.checks.etcd_health, with the etcd-healthcheck client certificate of the state directory);
- on that member, over its connector: `etcdctl snapshot save` into a fresh `mktemp -d` directory, with the
  etcdctl apply installed there (render.BIN_DIR, the bundle's, so the same version as the server) and the
  member's own etcd certificate (client and server, signed by the etcd CA, already on the host: no key travels
  for this); then, still there, `etcdctl snapshot status` (hash, revision, total keys: the file is a whole
  bolt database etcdctl can read), `sha256sum` of the file and `etcdctl member list`;
- the file is read back through the connector's `get` (whole, in memory: etcd's database is bounded by its
  quota, 2 GiB by default) and its sha256 and size must equal what the member computed, before anything is
  written here; the temporary directory on the member is removed whatever happened;
- here it becomes <state>/backups/etcd-<UTC YYYYmmddTHHMMSSZ>-<revision>.db (0600, directory 0700), written
  under a dot-name, fsync'd, read back and hashed again, then renamed into place; then its sidecar
  `<name>.json` (sha256, size, revision, hash, total keys, the member it came from, the member list, when).
- then only the last `cluster.etcd_backups_keep` snapshots are kept: the oldest files whose names match
  etcd-<time>-<revision>.db, and their sidecars, are removed; no other file in the directory is touched.

The v3 gRPC gateway (`/v3/maintenance/snapshot` from the control host) was not used: etcd 3.3 serves it as
/v3beta (3.4 as /v3), it streams base64 JSON chunks with no checksum of the whole, and verifying the result
would still need an etcdctl on the control host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import requests

from contract.digest import sha256_file
from contract.errors import Error
from installer import checks
from installer.hosts.connector import Connector, check_path
from installer.inventory import Host, Inventory
from installer.pki import Pki
from installer.plan_model import StepKind
from installer.render import BIN_DIR, PATHS

BACKUPS_DIR = "backups"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_RE = re.compile(r"^etcd-(\d{8}T\d{6}Z)-(\d+)\.db$")
SIDECAR_SUFFIX = ".json"
SAVE_TIMEOUT = 600.0
SHORT_TIMEOUT = 60.0
HEALTHCHECK_CERT = "etcd-healthcheck"
ETCD_ROLES = ("etcd", "master")
CONTROL_ETCD_WRITES = (StepKind.FLANNEL_KEY,)  # control-host steps that write into etcd itself

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class OnMember:
    """Where etcdctl, the member's etcd credential and a scratch directory are on an etcd host (as rendered)."""

    etcdctl: str = f"{BIN_DIR}/etcdctl"
    cacert: str = PATHS["etcd_ca"]
    cert: str = PATHS["etcd_crt"]  # the member's own: used only where the etcd-admin one is not there yet
    key: str = PATHS["etcd_key"]
    tmp_parent: str = "/var/tmp"
    admin_cert: str = PATHS["etcd_admin_crt"]  # a user with the root role once etcd authentication is on
    admin_key: str = PATHS["etcd_admin_key"]


@dataclass(frozen=True)
class Snapshot:
    """One verified snapshot in the state directory, and what retention removed after writing it."""

    path: Path
    sidecar: Path
    sha256: str
    size: int
    revision: int
    hash: int
    total_keys: int
    member: str
    address: str
    taken_at: str
    members: Tuple[dict, ...] = ()
    removed: Tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(path=str(self.path), sidecar=str(self.sidecar), members=list(self.members),
                 removed=list(self.removed))
        return d

    def line(self) -> str:
        return (f"etcd snapshot: {self.path} (revision {self.revision}, {self.total_keys} keys, {self.size} bytes, "
                f"sha256 {self.sha256[:16]}..., from {self.member})")

    def text(self) -> str:
        lines = [self.line(), f"  sidecar {self.sidecar}",
                 "  members: " + ", ".join(m.get("name") or m.get("id", "?") for m in self.members)]
        lines += [f"  removed (retention): {n}" for n in self.removed]
        return "\n".join(lines)


# ------------------------------------------------------------------ names and retention (pure on a directory)


def backups_dir(state_root: Path) -> Path:
    return Path(state_root) / BACKUPS_DIR


def snapshot_name(taken: dt.datetime, revision: int) -> str:
    """etcd-<UTC time>-<revision>.db"""
    if taken.tzinfo is None:
        raise ValueError("a snapshot's time must be timezone-aware")
    return f"etcd-{taken.astimezone(dt.timezone.utc).strftime(TIME_FORMAT)}-{int(revision)}.db"


def sidecar_of(db: Path) -> Path:
    return db.with_name(db.name + SIDECAR_SUFFIX)


def ours(directory: Path) -> List[Path]:
    """The snapshot files this module wrote (by name), oldest first (time, then revision)."""
    found = []
    for p in Path(directory).iterdir() if Path(directory).is_dir() else ():
        m = NAME_RE.match(p.name)
        if m and p.is_file() and not p.is_symlink():
            found.append((m.group(1), int(m.group(2)), p))
    return [p for _t, _r, p in sorted(found, key=lambda x: (x[0], x[1]))]


def prune(directory: Path, keep: int, new: Optional[Path] = None) -> List[Path]:
    """Remove all but the newest `keep` snapshots (and their sidecars); return what was removed.

    `new`, the snapshot just written, is always one of those kept, even if its name sorts older than others
    (the clock went back): the backup just taken is never the one retention removes."""
    if keep < 1:
        raise ValueError("keep at least one snapshot")
    others = [p for p in ours(directory) if new is None or p.name != new.name]
    kept_others = keep - 1 if new is not None else keep
    removed = []
    for db in others[:max(0, len(others) - kept_others)]:
        for p in (db, sidecar_of(db)):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


# ------------------------------------------------------------------ the decision before changes (pure)


def changes_etcd_or_masters(plan, inv: Inventory) -> List[str]:
    """The etcd and master hosts a plan changes ("etcd" itself for control-host writes into etcd)."""
    roles = {h.name for h in inv.hosts if any(h.has(r) for r in ETCD_ROLES)}
    out: List[str] = []
    for s in plan.steps:
        if not s.acts:
            continue
        name = s.host if s.host in roles else ("etcd" if s.kind in CONTROL_ETCD_WRITES else None)
        if name and name not in out:
            out.append(name)
    return out


def healthy_member(inv: Inventory, pki: Pki, session: requests.Session) -> Optional[Host]:
    """The first etcd member in inventory order whose /health says healthy, or None."""
    if not pki.crt_path(HEALTHCHECK_CERT).exists():
        return None
    ok = {r.target for r in checks.etcd_health(inv, pki, session) if r.ok}
    return next((m for m in inv.etcd_members if m.name in ok), None)


# ------------------------------------------------------------------ taking one


def _etcdctl(on: OnMember, address: str, *args: str) -> List[str]:
    """etcdctl with the etcd-admin credential, or the member's own before apply put the admin one there (a
    cluster from before etcd authentication: its snapshot is taken before the apply that turns it on)."""
    q = shlex.quote
    script = (f"c={q(on.admin_cert)} k={q(on.admin_key)}; [ -r \"$c\" ] && [ -r \"$k\" ] || "
              f"{{ c={q(on.cert)} k={q(on.key)}; }}; exec env ETCDCTL_API=3 \"$0\" "
              f"{q('--endpoints=https://' + address + ':2379')} {q('--cacert=' + on.cacert)} "
              "--cert=\"$c\" --key=\"$k\" --dial-timeout=10s \"$@\"")
    return ["sh", "-c", script, on.etcdctl, *args]


def _json(text: str, what: str, host: str) -> dict:
    try:
        data = json.loads(text[text.index("{"):])
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Error(f"{host}: {what} did not print a JSON object", context="taking an etcd snapshot",
                    details=text.strip().splitlines()[-5:],
                    hint=f"run it by hand on {host}; etcdctl 3.3 or later prints JSON with -w json")
    return data


def _status(c: Connector, on: OnMember, member: Host, remote: str) -> Tuple[int, int, int, int]:
    """(hash, revision, total keys, total size) from `etcdctl snapshot status`."""
    r = c.run(["env", "ETCDCTL_API=3", on.etcdctl, "snapshot", "status", remote, "-w", "json"],
              timeout=SHORT_TIMEOUT)
    st = _json(r.stdout, "etcdctl snapshot status", member.name)
    try:
        values = int(st["hash"]), int(st["revision"]), int(st["totalKey"]), int(st["totalSize"])
    except (KeyError, TypeError, ValueError):
        raise Error(f"{member.name}: etcdctl snapshot status lacks hash, revision, totalKey or totalSize",
                    context="verifying the etcd snapshot", details=[r.stdout.strip()[:300]],
                    hint="etcdctl on the member is not the bundle's (3.3): re-run apply") from None
    if values[1] < 1:
        raise Error(f"{member.name}: the snapshot has revision {values[1]}: not a snapshot of a running cluster",
                    context="verifying the etcd snapshot", hint="check `etcdctl endpoint status` on the member")
    return values


def _members(c: Connector, on: OnMember, member: Host) -> Tuple[dict, ...]:
    r = c.run(_etcdctl(on, member.address, "member", "list", "-w", "json"), timeout=SHORT_TIMEOUT)
    data = _json(r.stdout, "etcdctl member list", member.name)
    out = []
    for m in data.get("members") or []:
        out.append({"id": format(int(m.get("ID", 0)), "x"), "name": m.get("name", ""),
                    "peer_urls": list(m.get("peerURLs") or []), "client_urls": list(m.get("clientURLs") or [])})
    return tuple(out)


def _sha256sum(c: Connector, member: Host, remote: str) -> str:
    r = c.run(["sha256sum", "--", remote], timeout=SAVE_TIMEOUT)
    digest = (r.stdout.split() or [""])[0]
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise Error(f"{member.name}: sha256sum printed no digest for {remote}", context="taking an etcd snapshot",
                    details=[r.stdout.strip()[:200]], hint="coreutils' sha256sum must be on the member")
    return digest


def fetch(c: Connector, member: Host, on: OnMember = OnMember()) -> Tuple[bytes, dict]:
    """Take a snapshot on the member, verify it there, read it back; (bytes, facts). Removes the remote copy."""
    r = c.run(["mktemp", "-d", posixpath.join(on.tmp_parent, "k8s-offline-etcd-snapshot.XXXXXX")],
              timeout=SHORT_TIMEOUT)
    tmp = check_path(r.stdout.strip())
    remote = posixpath.join(tmp, "snapshot.db")
    try:
        c.run(_etcdctl(on, member.address, "snapshot", "save", remote), timeout=SAVE_TIMEOUT)
        hash_, revision, total_keys, total_size = _status(c, on, member, remote)
        digest = _sha256sum(c, member, remote)
        members = _members(c, on, member)
        data = c.get(remote)
    finally:
        c.run(f"rm -rf -- {shlex.quote(tmp)}", timeout=SHORT_TIMEOUT, check=False)
    if data is None:
        raise Error(f"{member.name}: {remote} vanished before it was read back", context="copying the etcd snapshot",
                    hint="something on the member removes files in its temporary directory; run it again")
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise Error(f"{member.name}: the snapshot read back differs from the member's (sha256 {got[:16]}... "
                    f"here, {digest[:16]}... there); nothing was written", context="copying the etcd snapshot",
                    hint="the connection corrupted or truncated it: run it again")
    return data, {"sha256": digest, "size": len(data), "revision": revision, "hash": hash_,
                  "total_keys": total_keys, "total_size": total_size, "members": members}


def _write_private(path: Path, data: bytes) -> None:
    """path <- data, 0600, durable: a dot-named temp file in the same directory, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)



def store(state_root: Path, data: bytes, facts: dict, member: Host, taken: dt.datetime, keep: int) -> Snapshot:
    """Write a fetched snapshot and its sidecar into <state>/backups, verify the file, apply retention."""
    d = backups_dir(state_root)
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        db = d / snapshot_name(taken, facts["revision"])
        _write_private(db, data)
        if sha256_file(db) != facts["sha256"]:
            db.unlink()
            raise Error(f"{db}: the file written differs from the snapshot taken; removed",
                        context="writing the etcd snapshot", hint=f"check the disk holding {d}, then run it again")
        side = sidecar_of(db)
        record = {"file": db.name, "sha256": facts["sha256"], "size": facts["size"], "revision": facts["revision"],
                  "hash": facts["hash"], "total_keys": facts["total_keys"], "taken_at": taken.isoformat(),
                  "member": {"name": member.name, "address": member.address},
                  "members": list(facts["members"]), "verified": "etcdctl snapshot status on the member; sha256 "
                  "of the member's file, of the bytes read back and of the file written here are equal"}
        _write_private(side, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        removed = prune(d, keep, new=db)
    except OSError as e:
        raise Error(f"cannot write the etcd snapshot into {d}: {e.strerror or e}",
                    context="writing the etcd snapshot",
                    hint="the state directory must be writable by this user and have room for the snapshot") from None
    return Snapshot(db, side, facts["sha256"], facts["size"], facts["revision"], facts["hash"], facts["total_keys"],
                    member.name, member.address, taken.isoformat(), tuple(facts["members"]),
                    tuple(p.name for p in removed))


def take(inv: Inventory, state_root: Path, c: Connector, member: Host, *, on: OnMember = OnMember(),
         clock: Clock = utcnow) -> Snapshot:
    """Snapshot through member's connector into <state>/backups, keeping cluster.etcd_backups_keep of them."""
    taken = clock().replace(microsecond=0)
    data, facts = fetch(c, member, on)
    return store(state_root, data, facts, member, taken, inv.cluster.etcd_backups_keep)


def no_healthy_member(inv: Inventory, doing: str) -> Error:
    """The error when no member answers /health healthy."""
    return Error("no etcd member is healthy: there is nothing a snapshot could be taken from",
                 context=doing, details=[f"{m.name} ({m.address}): /health not healthy" for m in inv.etcd_members],
                 hint="`installer check` shows each member's state; start etcd on at least one member (systemctl "
                      "start etcd) and run it again")


SNAPSHOT_DOING = "taking an etcd snapshot"


def require_pki(state_root: Path) -> Pki:
    """The state directory's PKI, which must hold the client certificate the health probe uses."""
    pki = Pki(state_root)
    if not pki.crt_path(HEALTHCHECK_CERT).exists():
        raise Error(f"no {HEALTHCHECK_CERT} certificate in {pki.dir}", context=SNAPSHOT_DOING,
                    hint="pass the --state directory that apply used")
    return pki


def snapshot_command(inv: Inventory, state_root: Path, session: requests.Session,
                     connector_for: Callable[[Inventory, Host], Connector], *, on: OnMember = OnMember(),
                     clock: Clock = utcnow) -> Snapshot:
    """`installer etcd snapshot` (the caller holds the state directory's lock)."""
    pki = require_pki(state_root)
    member = healthy_member(inv, pki, session)
    if member is None:
        raise no_healthy_member(inv, SNAPSHOT_DOING)
    c = connector_for(inv, member)
    try:
        return take(inv, state_root, c, member, on=on, clock=clock)
    finally:
        c.close()


# ------------------------------------------------------------------ before apply, add-node, certs renew


def before_changes(inv: Inventory, pki: Pki, state_root: Path, plan, session: requests.Session,
                   connector: Callable[[str], Connector], out: Callable[[str], None], *,
                   on: OnMember = OnMember(), clock: Clock = utcnow) -> Optional[dict]:
    """Take a snapshot when the plan changes an etcd or master host and etcd already runs; say so in one line.

    None when the plan changes none of them; {"taken": False, ...} when no member is healthy (a new cluster
    has nothing to back up); else the snapshot's record. A failed snapshot is an Error: nothing was changed."""
    changed = changes_etcd_or_masters(plan, inv)
    if not changed:
        return None
    member = healthy_member(inv, pki, session)
    if member is None:
        why = "no etcd member is healthy yet (a new cluster has nothing to back up)"
        out(f"etcd snapshot: none taken: {why}")
        return {"taken": False, "reason": why, "changes": changed}
    try:
        snap = take(inv, state_root, connector(member.name), member, on=on, clock=clock)
    except Error as e:
        raise Error(f"no etcd snapshot before changing {', '.join(changed)}: {e.message}; nothing was changed",
                    context=e.context or "taking an etcd snapshot before applying", details=e.details,
                    hint=e.hint) from None
    out(snap.line())
    return dict(snap.to_dict(), taken=True, changes=changed)


def evidence_lines(record: Optional[dict]) -> List[str]:
    """The evidence report's lines about the snapshot taken before the changes."""
    if not record:
        return []
    if not record.get("taken"):
        return [f"etcd snapshot: none taken: {record.get('reason', '')}"]
    return [f"etcd snapshot before changing {', '.join(record.get('changes') or [])}: {record['path']} "
            f"(revision {record['revision']}, sha256 {record['sha256']}, from {record['member']})"]


__all__ = ["BACKUPS_DIR", "NAME_RE", "OnMember", "Snapshot", "before_changes", "changes_etcd_or_masters",
           "evidence_lines", "fetch", "healthy_member", "ours", "prune", "snapshot_command", "snapshot_name",
           "store", "take"]
