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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
