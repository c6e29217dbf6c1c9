"""The `installer` command: typer adapter only (parse, call, print, exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from installer import inventory as inventory_mod
from installer.cliutil import emit, guarded, new_app

app = new_app("installer", "Verify an offline bundle, seed the registry and bring up the cluster (air-gapped side).")

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command()
def validate(
    inventory: Path = typer.Argument(..., help="Inventory file (see inventory.example.yaml)."),
    as_json: bool = JSON,
) -> None:
    """Validate an inventory; print every problem with its YAML path (exit 2 if any)."""

    def body() -> None:
        inv = inventory_mod.load(inventory)
        data = {
            "inventory": str(inventory),
            "valid": True,
            "hosts": {h.name: {"address": h.address, "roles": list(h.roles)} for h in inv.hosts},
            "vip": inv.cluster.vip,
            "registry": inv.registry.endpoint,
        }
        emit(data, as_json, lambda d: (
            f"{d['inventory']}: valid: {len(d['hosts'])} hosts, VIP {d['vip']}, registry {d['registry']}\n"
            + "\n".join(f"  {n:<20} {h['address']:<16} {','.join(h['roles'])}" for n, h in d["hosts"].items())))

    guarded(body, as_json=as_json)


def _default_state() -> Path:
    import os

    env = os.environ.get("K8S_OFFLINE_STATE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/k8s-offline")
    return Path.home() / ".local" / "state" / "k8s-offline"


STATE = typer.Option(None, "--state", help="State directory on this control host: PKI, passwords, journal "
                     "(default $K8S_OFFLINE_STATE, /var/lib/k8s-offline as root, else ~/.local/state/k8s-offline).")


@app.command()
def render(
    inventory: Path = typer.Option(..., "--inventory", "-i", help="Inventory file."),
    out: Path = typer.Option(..., "--out", help="Directory to write DIR/<host>/<absolute path> into."),
    state: Optional[Path] = STATE,
    as_json: bool = JSON,
) -> None:
    """Create or reuse the site PKI and write every file each host gets (nothing is sent to hosts)."""
    from installer import render as render_mod

    def body() -> None:
        d = render_mod.render_to_dir(inventory, state or _default_state(), out)
        emit(d, as_json, lambda d: "\n".join(
            [f"wrote {d['files']} files under {d['out_dir']}"]
            + [f"  {h:<20} {n} files" for h, n in d["hosts"].items()]
            + [f"  pki: {line}" for line in d["pki"]]))

    guarded(body, as_json=as_json)


certs_app = typer.Typer(help="The site PKI.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("check")
def certs_check(
    inventory: Path = typer.Option(..., "--inventory", "-i", help="Inventory file."),
    state: Optional[Path] = STATE,
    as_json: bool = JSON,
) -> None:
    """Every certificate with its SANs and days left; exit 1 if any is missing, mismatched or expiring."""
    from installer import pki

    def body() -> None:
        inv = inventory_mod.load(inventory)
        rows = pki.check(state or _default_state(), inv)
        data = [{"name": r.name, "subject": r.subject, "sans": list(r.sans), "issuer": r.issuer,
                 "not_after": r.not_after.isoformat() if r.not_after else None, "days_left": r.days_left,
                 "status": r.status, "reason": r.reason} for r in rows]
        emit(data, as_json, lambda d: "\n".join(
            f"{r['status']:<9} {r['name']:<34} {str(r['days_left']) + 'd':>6}  {r['subject']}"
            + (f"  SANs: {', '.join(r['sans'])}" if r["sans"] else "") + (f"  ({r['reason']})" if r["reason"] else "")
            for r in d))
        bad = [r for r in rows if r.status != "ok"]
        if bad:
            from installer.errors import Error

            raise Error(f"{len(bad)} certificate(s) need attention: " + ", ".join(r.name for r in bad),
                        context="checking the site PKI", hint="`installer render` (or apply) reissues them")

    guarded(body, as_json=as_json)


def _bundle_text(d: dict) -> str:
    return (f"{d['bundle']}: OK: {d['name']} {d['version']}, {d['files']} files, {d['bytes']} bytes verified; "
            f"signed by {d['fingerprint']}" + (f"; unpacked into {d['dest']}" if d.get("dest") else ""))


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Path = typer.Option(..., "--pub", help="The signer's public key (bundle.pub)."),
    as_json: bool = JSON,
) -> None:
    """Check the signature, then every member's size and sha256, and that nothing else is in the bundle."""
    from installer import bundle as fmt
    from installer.progress import bar

    def body() -> None:
        key = fmt.load_public_key(pub)
        with bar("verify") as progress:
            r = fmt.verify_bundle(bundle, key, progress=progress)
        emit({"bundle": str(bundle), "ok": True, "name": r.name, "version": r.version, "files": r.files,
              "bytes": r.bytes, "fingerprint": r.fingerprint}, as_json, _bundle_text)

    guarded(body, as_json=as_json)


@app.command()
def unpack(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Path = typer.Option(..., "--pub", help="The signer's public key (bundle.pub)."),
    dest: Path = typer.Option(..., "--dest", help="New or empty directory; left untouched unless all verifies."),
    as_json: bool = JSON,
) -> None:
    """Verify and unpack; nothing appears at DEST unless the whole bundle verified."""
    from installer import bundle as fmt
    from installer.progress import bar

    def body() -> None:
        key = fmt.load_public_key(pub)
        with bar("unpack") as progress:
            r = fmt.unpack_bundle(bundle, key, dest, progress=progress)
        emit({"bundle": str(bundle), "ok": True, "name": r.name, "version": r.version, "files": r.files,
              "bytes": r.bytes, "fingerprint": r.fingerprint, "dest": str(dest)}, as_json, _bundle_text)

    guarded(body, as_json=as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
