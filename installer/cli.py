"""The `installer` command: typer adapter only (parse, call, print, exit code). This module holds the app, the
inventory and rendering commands and the registration of the others (one module per command group:
cli_bundle, cli_cluster, cli_certs, cli_etcd, cli_seed; their shared options in cli_common)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from contract.bundle import commands
from contract.cliutil import emit, guarded
from installer import cli_certs, cli_etcd, runlock
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer.cli_bundle import (  # their bodies: contract/bundle/commands.py (bundler's too)
    receipt,
    unpack,
    verify,
)
from installer.cli_cluster import add_node, apply, check, plan, remove_node, upgrade
from installer.cli_common import JSON, STATE, new_app
from installer.cli_seed import seed

app = new_app("installer", "Verify an offline bundle, seed the registry and bring up the cluster (air-gapped side).")


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


@app.command()
def render(
    inventory: Path = typer.Option(..., "--inventory", "-i", help="Inventory file."),
    out: Path = typer.Option(..., "--out", help="Directory to write DIR/<host>/<absolute path> into."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="The bundle (file, any part, or the parts' "
                                          "directory): render exactly what apply writes. Without it the files "
                                          "that depend on the bundle are previews."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="The signer's public key, with --bundle."),
    state: Optional[Path] = STATE,
    as_json: bool = JSON,
) -> None:
    """Create or reuse the site PKI and write every file each host gets (nothing is sent to hosts)."""
    from contract.errors import Error
    from installer import render as render_mod

    def body() -> None:
        if (bundle is None) != (pub is None):
            raise Error("--bundle and --pub go together", context="rendering",
                        hint="pass both to render what apply writes, or neither for a preview without the bundle")
        root = state or common.default_state()
        inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        with runlock.hold(root, "render"):  # creates or reissues the PKI: never two at once
            d = render_mod.render_to_dir(inventory, root, out, bundle=bundle, pub=pub, out=common.out)
        if d["previews"] and not as_json:
            why = ("hold the Harbor passwords apply generates on its first run (not yet in the state directory)"
                   if bundle is not None else "depend on the bundle and were rendered without it (pass --bundle "
                   "and --pub to render what apply writes)")
            common.out(f"render: preview: {sum(map(len, d['previews'].values()))} file(s) {why}:")
            for host, paths in d["previews"].items():
                common.out(f"  {host}: {', '.join(paths)}")
            if bundle is None:
                common.out(f"render: not rendered without the bundle: {render_mod.WITHOUT_BUNDLE}")
        emit(d, as_json, lambda d: "\n".join(
            [f"wrote {d['files']} files under {d['out_dir']}" + (f" from {d['bundle']}" if d["bundle"] else "")]
            + [f"  {h:<20} {n} files" + (f" (+ {len(d['not_written'][h]['binaries'])} executables and "
                                          f"{d['not_written'][h]['repo_files']} repository files, not copied)"
                                          if h in d["not_written"] else "")
               for h, n in d["hosts"].items()]
            + [f"  pki: {line}" for line in d["pki"]]))

    guarded(body, as_json=as_json)


# in this order in `installer --help`
app.command(help=commands.VERIFY_HELP)(verify)
app.command(help=commands.UNPACK_HELP)(unpack)
app.command()(receipt)
app.command()(plan)
app.command()(apply)
app.command()(upgrade)
app.command("add-node")(add_node)
app.command("remove-node")(remove_node)
app.command()(check)
app.command()(seed)
app.add_typer(cli_certs.app, name="certs")
app.add_typer(cli_etcd.app, name="etcd")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
