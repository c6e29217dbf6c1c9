"""`installer verify` and `installer unpack`: the bundle (or one part of it) checked against its signature (a
delta with its base); `installer receipt`: what the site holds, for a delta.

The bodies, texts and output live in contract/bundle/commands.py (bundler's `verify` runs the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from contract.bundle import commands
from contract.cliutil import emit, guarded
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer.cli_common import HOST_KEYS, INVENTORY, JOBS, JSON, KNOWN_HOSTS, STATE


def verify(
    bundle: Path = typer.Argument(..., help=commands.VERIFY_BUNDLE_HELP),
    pub: Path = typer.Option(..., "--pub", help=commands.PUB_HELP),
    base: Optional[Path] = typer.Option(None, "--base", help=commands.BASE_HELP),
    as_json: bool = JSON,
) -> None:
    commands.verify(bundle, pub, as_json, base)


def unpack(
    bundle: Path = typer.Argument(..., help=commands.UNPACK_BUNDLE_HELP),
    pub: Path = typer.Option(..., "--pub", help=commands.PUB_HELP),
    dest: Path = typer.Option(..., "--dest", help=commands.DEST_HELP),
    base: Optional[Path] = typer.Option(None, "--base", help=commands.BASE_HELP),
    as_json: bool = JSON,
) -> None:
    commands.unpack(bundle, pub, dest, as_json, base)


def receipt(
    inventory: Path = INVENTORY,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the receipt (JSON; it holds no secret)."),
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Write what this site holds (the unpacked bundle's files, each host's RPMs and executables), for
    `bundler build --since FILE` to build a delta bundle of only what the site lacks."""
    from installer import receipt as receipt_mod
    from installer.state import StateDir

    def body() -> None:
        root = state or common.default_state()
        inv = inventory_mod.load(inventory)
        from installer.options import default_session

        r, notes = receipt_mod.write(inv, StateDir(root), out, common.connectors(root, known_hosts, host_keys), jobs,
                                     session=default_session())
        d = {"receipt": str(out), "bundles": [{"name": b.name, "version": b.version, "files": len(b.files),
                                                "manifest_sha256": b.manifest_sha256} for b in r.bundles],
             "hosts": {n: {"rpms": len(h.rpms), "executables": len(h.binaries)} for n, h in r.hosts.items()},
             "registry": {"address": r.registry, "blobs": len(r.registry_blobs)},
             "notes": notes}
        emit(d, as_json, lambda d: receipt_mod.text(r, out, notes))

    guarded(body, as_json=as_json)
