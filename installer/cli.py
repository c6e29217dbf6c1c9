"""The `installer` command: typer adapter only (parse, call, print, exit code)."""

from __future__ import annotations

from pathlib import Path

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
