"""`installer seed`: the bundle's images pushed to the site registry (Harbor or registry v2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from contract.cliutil import emit, guarded
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer import runlock
from installer.cli_common import JSON, STATE


def seed(
    source: Path = typer.Argument(..., help="A bundle (file, part or parts directory; needs --pub), an unpacked "
                                  "bundle directory, or an OCI image layout directory."),
    registry: Optional[str] = typer.Option(None, "--registry", help="HOST[:PORT] of the registry (Harbor or "
                                           "registry v2); or take everything from --inventory."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="Take the registry, project, CA and "
                                             "credentials from the inventory (and the generated Harbor password "
                                             "from --state in install mode)."),
    state: Optional[Path] = STATE,
    project: str = typer.Option("kubernetes", "--project", help="Harbor project (repository prefix)."),
    username: Optional[str] = typer.Option(None, "--username", help="Registry user."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="File holding the password."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA that signed the registry's certificate."),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP (only for a registry configured so)."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="Public key, when SOURCE is a bundle file."),
    delta_base: Optional[Path] = typer.Option(None, "--base", help="When SOURCE is a delta bundle: the directory its "
                                        "base bundle was unpacked into."),
    naming: str = typer.Option("last-component", "--naming", help="last-component (k8s.gcr.io/pause-amd64:3.1 -> "
                               "PROJECT/pause-amd64:3.1) or keep-path."),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="Harbor API base URL when it is not the "
                                          "registry's own origin (default: the registry URL)."),
    create_project: bool = typer.Option(True, "--create-project/--no-create-project",
                                        help="Create the Harbor project (public) if missing, when the API exists."),
    jobs: int = typer.Option(4, "--jobs", min=1, max=32, help="Parallel uploads."),
    as_json: bool = JSON,
) -> None:
    """Push every image of the bundle to REGISTRY/PROJECT, only the blobs it lacks; verify every digest."""
    import shutil
    import tempfile

    import requests

    from contract import bundle as fmt
    from contract.errors import Error
    from installer.registry import client as reg_client
    from installer.registry import harbor
    from installer.registry import seed as seed_mod

    def body() -> None:
        if inventory is not None:
            if registry:
                raise Error("--registry and --inventory exclude each other",
                            hint="the inventory names the registry; drop --registry")
            _seed_from_inventory()
            return
        if not registry:
            raise Error("no registry given", context="seeding images",
                        hint="pass --registry HOST[:PORT], or --inventory INVENTORY")
        layout_dir, tmp = _layout_of(source, pub, fmt, Error, tempfile, delta_base)
        try:
            if insecure and ca_file:
                raise Error("--insecure and --ca-file exclude each other", hint="TLS with a CA, or plain HTTP")
            password = reg_client.read_password(password_file) if password_file else None
            session = requests.Session()
            base = f"{'http' if insecure else 'https'}://{registry}"
            verify = str(ca_file) if ca_file else True
            if create_project:
                api = harbor.HarborAPI(api_url or base, session, username=username, password=password,
                                       verify=verify)
                try:
                    api.api()
                except harbor.NoHarborAPI:
                    api = None  # a plain registry v2: repositories need no project
                if api is not None:
                    api.ensure_project(project, public=True)
            client = reg_client.RegistryClient(base, session, username=username, password=password, verify=verify)
            report = seed_mod.push_missing(layout_dir, client, project, jobs=jobs, naming=naming)
            emit(report.as_dict(), as_json, lambda d: report.summary())
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _seed_from_inventory() -> None:
        from installer import checks as checks_mod
        from installer import harbor_install
        from installer import pki as pki_mod

        inv = inventory_mod.load(inventory)
        root = state or common.default_state()
        with runlock.hold(root, "seed"):  # uses the state's Harbor password and CA while no apply changes them
            access = harbor_install.access(inv, root, pki_mod.Pki(root).crt_path("ca"))
            if inv.registry.mode == "install" and not access.get("password"):
                raise Error(f"no generated Harbor admin password in {root}", context="seeding images",
                            hint="pass the --state directory `installer apply` used (it installed Harbor)")
            layout_dir, tmp = _layout_of(source, pub, fmt, Error, tempfile, delta_base)
            try:
                session = requests.Session()
                if create_project:
                    checks_mod.ensure_project(inv, session, **access)
                client = checks_mod.registry_client(inv, session, **access)
                report = seed_mod.push_missing(layout_dir, client, inv.registry.project, jobs=jobs, naming=naming)
                emit(report.as_dict(), as_json, lambda d: report.summary())
            finally:
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)

    guarded(body, as_json=as_json)


def _layout_of(source: Path, pub: Optional[Path], fmt, Error, tempfile, base: Optional[Path] = None):
    """(OCI layout dir, temp dir to remove or None) for a layout, an unpacked bundle, or a bundle file."""
    if (source / "oci-layout").is_file():
        return source, None
    if (source / "images" / "oci-layout").is_file():
        return source / "images", None
    if pub is None:
        raise Error(f"{source} is not an image layout or unpacked bundle, and no --pub was given",
                    context="finding the images to seed",
                    hint="pass --pub bundle.pub to verify and unpack a bundle file first")
    tmp = Path(tempfile.mkdtemp(prefix="k8s-offline-seed-"))
    fmt.unpack_bundle(source, fmt.load_public_key(pub), tmp / "bundle",
                      base=fmt.BaseDir(base) if base is not None else None)
    return tmp / "bundle" / "images", tmp
