"""`installer etcd snapshot` and `installer etcd restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from contract.cliutil import emit, guarded
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer import runlock
from installer.cli_common import HOST_KEYS, INVENTORY, JOBS, JSON, KNOWN_HOSTS, STATE

app = typer.Typer(help="The cluster's etcd.", no_args_is_help=True)


@app.command("snapshot")
def etcd_snapshot(
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """Snapshot etcd from the first healthy member into <state>/backups (verified; the last
    cluster.etcd_backups_keep are kept)."""
    from installer import apply as apply_mod
    from installer import etcd_backup

    def body() -> None:
        root = state or common.default_state()
        inv = inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        etcd_backup.require_pki(root)  # so is a state directory without the PKI
        with runlock.hold(root, "etcd snapshot"):  # retention removes files: never alongside another run
            snap = etcd_backup.snapshot_command(inv, root, apply_mod.default_session(),
                                                common.connectors(root, known_hosts, host_keys))
        emit(snap.to_dict(), as_json, lambda d: snap.text())

    guarded(body, as_json=as_json)


@app.command("restore")
def etcd_restore(
    snapshot: Path = typer.Argument(..., help="A snapshot file (from <state>/backups)."),
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Disaster recovery: stop the apiservers and etcd, restore the snapshot on every member (old data moved
    aside), start etcd, flanneld and the apiservers again."""
    from installer import apply as apply_mod
    from installer import etcd_backup
    from installer import etcd_restore as er

    def body() -> None:
        root = state or common.default_state()
        inv = inventory_mod.load(inventory)
        p = etcd_backup.require_pki(root)
        members = er.plan(inv, snapshot)
        with runlock.hold(root, "etcd restore"):
            for line in er.plan_lines(inv, snapshot, members):
                common.out(line)
            d = er.restore(inv, p, snapshot, members, apply_mod.default_session(),
                           common.connectors(root, known_hosts, host_keys), common.out, max_parallel=jobs)
        emit(d, as_json, lambda d: f"etcd restored from {d['snapshot']}; run `installer check`")

    guarded(body, as_json=as_json)
