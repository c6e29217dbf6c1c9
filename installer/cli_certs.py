"""`installer certs check` and `installer certs renew`: the site PKI."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from contract.cliutil import emit, guarded
from installer import cli_cluster
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer.cli_common import BUNDLE, HOST_KEYS, INVENTORY, JOBS, JSON, KNOWN_HOSTS, PUB, STATE

app = typer.Typer(help="The site PKI.", no_args_is_help=True)


@app.command("check")
def certs_check(
    inventory: Path = typer.Option(..., "--inventory", "-i", help="Inventory file."),
    state: Optional[Path] = STATE,
    as_json: bool = JSON,
) -> None:
    """Every certificate with its SANs and days left; exit 1 if any is missing, mismatched or expiring."""
    from installer import pki_status

    def body() -> None:
        inv = inventory_mod.load(inventory)
        rows = pki_status.check(state or common.default_state(), inv)
        data = [{"name": r.name, "subject": r.subject, "sans": list(r.sans), "issuer": r.issuer,
                 "not_after": r.not_after.isoformat() if r.not_after else None, "days_left": r.days_left,
                 "status": r.status, "reason": r.reason} for r in rows]
        emit(data, as_json, lambda d: "\n".join(
            f"{r['status']:<9} {r['name']:<34} {str(r['days_left']) + 'd':>6}  {r['subject']}"
            + (f"  SANs: {', '.join(r['sans'])}" if r["sans"] else "") + (f"  ({r['reason']})" if r["reason"] else "")
            for r in d))
        bad = [r for r in rows if r.status != "ok"]
        if bad:
            from contract.errors import Error

            raise Error(f"{len(bad)} certificate(s) need attention: " + ", ".join(r.name for r in bad),
                        context="checking the site PKI", hint="`installer render` (or apply) reissues them")

    guarded(body, as_json=as_json)


@app.command("renew")
def certs_renew(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Reissue certificates that expire within cluster.renew_within_days (or mismatch), then roll them out."""
    # the PKI step of every converge reissues what is due; the rolling restarts roll it out
    cli_cluster.converge(bundle, inventory, pub, state, known_hosts, host_keys, jobs, as_json,
                         command="certs renew")
