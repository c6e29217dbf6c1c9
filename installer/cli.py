"""The `installer` command: typer adapter only (parse, call, print, exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from installer import inventory as inventory_mod
from installer import runlock
from installer.cliutil import emit, guarded, new_app
from installer.hosts.known_hosts import DEFAULT_MODE as DEFAULT_HOST_KEYS
from installer.hosts.known_hosts import MODES as HOST_KEY_MODES

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
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="The bundle (file, any part, or the parts' "
                                          "directory): render exactly what apply writes. Without it the files "
                                          "that depend on the bundle are previews."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="The signer's public key, with --bundle."),
    state: Optional[Path] = STATE,
    as_json: bool = JSON,
) -> None:
    """Create or reuse the site PKI and write every file each host gets (nothing is sent to hosts)."""
    from installer import render as render_mod
    from installer.errors import Error

    def body() -> None:
        if (bundle is None) != (pub is None):
            raise Error("--bundle and --pub go together", context="rendering",
                        hint="pass both to render what apply writes, or neither for a preview without the bundle")
        root = state or _default_state()
        inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        with runlock.hold(root, "render"):  # creates or reissues the PKI: never two at once
            d = render_mod.render_to_dir(inventory, root, out, bundle=bundle, pub=pub, out=_out)
        if d["previews"] and not as_json:
            why = ("hold the Harbor passwords apply generates on its first run (not yet in the state directory)"
                   if bundle is not None else "depend on the bundle and were rendered without it (pass --bundle "
                   "and --pub to render what apply writes)")
            _out(f"render: preview: {sum(map(len, d['previews'].values()))} file(s) {why}:")
            for host, paths in d["previews"].items():
                _out(f"  {host}: {', '.join(paths)}")
            if bundle is None:
                _out(f"render: not rendered without the bundle: {render_mod.WITHOUT_BUNDLE}")
        emit(d, as_json, lambda d: "\n".join(
            [f"wrote {d['files']} files under {d['out_dir']}" + (f" from {d['bundle']}" if d["bundle"] else "")]
            + [f"  {h:<20} {n} files" + (f" (+ {len(d['not_written'][h]['binaries'])} executables and "
                                          f"{d['not_written'][h]['repo_files']} repository files, not copied)"
                                          if h in d["not_written"] else "")
               for h, n in d["hosts"].items()]
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
    text = (f"{d['bundle']}: OK: {d['name']} {d['version']}, {d['files']} files, {d['bytes']} bytes verified; "
            f"signed by {d['fingerprint']} ({d['key_type']}: {', '.join(d['signatures_checked'])})")
    if d["signatures_not_checked"]:
        text += (f"; {', '.join(d['signatures_not_checked'])} (Ed25519) not checked: no Ed25519 key given "
                 "(bundle.pub)")
    if d.get("parts_index"):
        text += f"; parts index {d['parts_index']}"
    text += f"; unpacked into {d['dest']}" if d.get("dest") else ""
    return "\n".join([text] + [f"WARNING: {w}" for w in d.get("warnings", [])])


def _part_text(d: dict) -> str:
    return "\n".join([f"{d['part']}: OK: part {d['number']} of {d['count']} of {d['bundle_file']}, {d['size']} "
                      f"bytes, sha256 as the parts index {d['parts_index']} says"
                      + (f" (key {d['fingerprint']})" if d["fingerprint"] else "")]
                     + [f"WARNING: {w}" for w in d["warnings"]])


PUB_HELP = ("The signer's public key: bundle.pub (Ed25519; checks the P-256 signature too when the bundle has "
            "one) or bundle-p256.pub (P-256 only).")


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="The bundle file, the directory of its parts or their index (the "
                                  "whole bundle); or one part (.partNNN: that part alone, against the signed index)."),
    pub: Path = typer.Option(..., "--pub", help=PUB_HELP),
    as_json: bool = JSON,
) -> None:
    """Check the signature, then every member's size and sha256, and that nothing else is in the bundle; a split
    bundle's parts are each checked against the signed parts index first. Given one part: check that part."""
    from installer.bundle import layout

    if layout.parse_part_filename(bundle.name) is not None and not bundle.is_dir():
        _verify_part(bundle, pub, as_json)
        return
    _verify_or_unpack(bundle, pub, None, as_json)


def _verify_part(part: Path, pub: Path, as_json: bool) -> None:
    """One part against its bundle's signed index, as it comes off the medium, before the others are there."""
    from installer import bundle as fmt
    from installer.bundle import partcheck

    def body() -> None:
        r = partcheck.check_part(part, fmt.load_public_key(pub))
        warning = r.index.warning
        d = {"part": str(part), "ok": True, "bundle_file": r.bundle, "number": r.number, "count": r.count,
             "size": r.size, "sha256": r.sha256, "parts_index": r.index.status, "fingerprint": r.index.fingerprint,
             "warnings": [warning] if warning else []}
        emit(d, as_json, _part_text)

    guarded(body, as_json=as_json)


@app.command()
def unpack(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Path = typer.Option(..., "--pub", help=PUB_HELP),
    dest: Path = typer.Option(..., "--dest", help="New or empty directory; left untouched unless all verifies."),
    as_json: bool = JSON,
) -> None:
    """Verify and unpack; nothing appears at DEST unless the whole bundle verified."""
    _verify_or_unpack(bundle, pub, dest, as_json)


def _verify_or_unpack(bundle: Path, pub: Path, dest: Optional[Path], as_json: bool) -> None:
    """One streaming pass: verify every member, and with dest also write them (renamed into place at the end)."""
    from installer import bundle as fmt
    from installer.progress import bar

    def body() -> None:
        key = fmt.load_public_key(pub)
        with bar("unpack" if dest else "verify") as progress:
            r = (fmt.unpack_bundle(bundle, key, dest, progress=progress) if dest
                 else fmt.verify_bundle(bundle, key, progress=progress))
        d = {"bundle": str(bundle), "ok": True, "name": r.name, "version": r.version, "files": r.files,
             "bytes": r.bytes, "fingerprint": r.fingerprint, "key_type": r.key_type,
             "signatures_checked": list(r.checked), "signatures_not_checked": list(r.not_checked),
             "parts_index": r.parts_index or None, "warnings": list(r.warnings)}
        if dest:
            d["dest"] = str(dest)
        emit(d, as_json, _bundle_text)

    guarded(body, as_json=as_json)


BUNDLE = typer.Option(..., "--bundle", "-b", help="The bundle file, its first (or any) part, or the parts' directory.")
PUB = typer.Option(..., "--pub", help="The signer's public key (bundle.pub, or bundle-p256.pub).")
INVENTORY = typer.Option(..., "--inventory", "-i", help="Inventory file.")
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="ssh known_hosts file to use (default: "
                           "<state>/known_hosts).")
HOST_KEYS = typer.Option(DEFAULT_HOST_KEYS, "--host-keys", metavar="|".join(HOST_KEY_MODES),
                         help="ssh host keys: accept-new learns the key of a host not yet in known_hosts on first "
                         "contact (printing its fingerprint) and refuses changed keys; strict also refuses hosts "
                         "not in known_hosts.")


def _out(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _connectors(state: Path, known_hosts: Optional[Path], host_keys: str):
    """OpenSSH connectors checking host keys against --known-hosts or <state>/known_hosts."""
    from installer import apply as apply_mod
    from installer.state import StateDir

    path = known_hosts or StateDir(state).known_hosts_path
    return apply_mod.ssh_connectors(known_hosts=str(path), host_keys=host_keys, out=_out)


def _options(state: Path, known_hosts: Optional[Path], host_keys: str, checks: bool = True):
    """Executor collaborators for the commands: OpenSSH, a proxy-free session, progress on stderr."""
    from installer import apply as apply_mod

    return apply_mod.Options(
        connector_for=_connectors(state, known_hosts, host_keys),
        session=apply_mod.default_session(),
        out=_out,
        checks=checks,
    )


@app.command()
def plan(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 0 when there is nothing to "
                                           "do, 2 when apply would change something, 1 on any error."),
    as_json: bool = JSON,
) -> None:
    """Print what apply would change, per phase and host, with diffs (secrets show only "changed"); writes nothing."""
    from installer import apply as apply_mod

    changes: List[bool] = []

    def body() -> None:
        root = state or _default_state()
        p = apply_mod.plan_command(inventory, bundle, pub, root, _options(root, known_hosts, host_keys))
        emit(p.to_dict(), as_json, lambda d: p.text())
        if p.images is not None and not p.images.ok:  # zero egress: exit 1 naming every offending reference
            raise p.images.error()
        changes.append(not p.empty)

    try:
        guarded(body, as_json=as_json)
    except typer.Exit as e:
        if detailed_exitcode and e.exit_code:
            raise typer.Exit(1) from None  # 2 means "changes" here: every error, bad input included, is 1
        raise
    if detailed_exitcode and any(changes):
        raise typer.Exit(2)


def _apply_text(d: dict) -> str:
    from installer import apply as apply_mod

    return apply_mod.evidence_text(d)


@app.command()
def apply(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """Verify the bundle, then bring every host to the desired state phase by phase, and check the cluster."""
    _apply(bundle, inventory, pub, state, known_hosts, host_keys, as_json, command="apply")


def _apply(bundle: Path, inventory: Path, pub: Path, state: Optional[Path], known_hosts: Optional[Path],
           host_keys: str, as_json: bool, focus: Optional[List[str]] = None, *, command: str) -> None:
    """apply, add-node and certs renew: one converge, optionally focused on some hosts."""
    def body() -> None:
        root = state or _default_state()
        inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        with runlock.hold(root, command):  # one run per state directory: refuses at once, naming the holder
            _converge(bundle, inventory, pub, root, known_hosts, host_keys, as_json, focus)

    guarded(body, as_json=as_json)


def _converge(bundle: Path, inventory: Path, pub: Path, root: Path, known_hosts: Optional[Path], host_keys: str,
              as_json: bool, focus: Optional[List[str]]) -> None:
    from installer import apply as apply_mod
    from installer.errors import Error

    if focus:
        inv = inventory_mod.load(inventory)
        unknown = [n for n in focus if n not in {h.name for h in inv.hosts}]
        if unknown:
            raise Error(f"not in the inventory: {', '.join(unknown)}", context="adding nodes",
                        hint="add the host to the inventory first, then run add-node with its name")
    d = apply_mod.apply_command(inventory, bundle, pub, root, _options(root, known_hosts, host_keys), focus=focus)
    emit(d, as_json, _apply_text)


@app.command("add-node")
def add_node(
    node: List[str] = typer.Argument(..., help="Name(s) of the new host(s), already in the inventory."),
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """Join new hosts: only they change, plus the shared files of the others (/etc/hosts); masters stay."""
    _apply(bundle, inventory, pub, state, known_hosts, host_keys, as_json, focus=node, command="add-node")


@app.command("remove-node")
def remove_node(
    node: List[str] = typer.Argument(..., help="Name(s) of the host(s) to remove, already gone from the inventory."),
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    keep_data: bool = typer.Option(False, "--keep-data", help="Keep docker's data root (cluster.docker_data_root)."),
    as_json: bool = JSON,
) -> None:
    """Drain nodes, delete their Node objects, stop their units, remove what the installer put there, forget them."""
    from installer import apply as apply_mod
    from installer import pki as pki_mod
    from installer import remove_node as rn
    from installer.state import StateDir

    def body() -> None:
        inv = inventory_mod.load(inventory)
        root = state or _default_state()
        with runlock.hold(root, "remove-node"):
            st = StateDir(root)
            p = pki_mod.Pki(root)
            removals = rn.plan(inv, st, p, node, keep_data)
            for rm in removals:
                for line in rm.plan_lines():
                    _out(line)
            kh = known_hosts or st.known_hosts_path
            d = rn.remove(inv, st, p, removals, _connectors(root, known_hosts, host_keys),
                          apply_mod.default_session(), _out, kh)
        emit(d, as_json, lambda d: "removed: " + ", ".join(d["removed"]))

    guarded(body, as_json=as_json)


@app.command()
def check(
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """etcd, /healthz via the VIP, componentstatuses, leaders, nodes Ready, pod network, pulls (exit 1 if not)."""
    from installer import apply as apply_mod
    from installer import checks as checks_mod
    from installer import pki as pki_mod
    from installer.egress import egress_results
    from installer.errors import Error

    def body() -> None:
        inv = inventory_mod.load(inventory)
        root = state or _default_state()
        p = pki_mod.Pki(root)
        if not p.crt_path("ca").exists():
            raise Error(f"no site PKI in {p.dir}", context="checking the cluster",
                        hint="pass the --state directory that apply used")
        conns = _connectors(root, known_hosts, host_keys)
        rep = checks_mod.run_all(inv, p, apply_mod.default_session(), conns)
        rep.results += egress_results(inv, root, apply_mod.default_session())
        emit(rep.as_dict(), as_json, lambda d: rep.text())
        if not rep.ok:
            raise Error(f"{sum(not r.ok for r in rep.results)} cluster check(s) failed", context="checking the cluster",
                        details=[r.line() for r in rep.results if not r.ok],
                        hint="`journalctl -u <unit>` on the host named shows why")

    guarded(body, as_json=as_json)


etcd_app = typer.Typer(help="The cluster's etcd.", no_args_is_help=True)
app.add_typer(etcd_app, name="etcd")


@etcd_app.command("snapshot")
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
        root = state or _default_state()
        inv = inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        etcd_backup.require_pki(root)  # so is a state directory without the PKI
        with runlock.hold(root, "etcd snapshot"):  # retention removes files: never alongside another run
            snap = etcd_backup.snapshot_command(inv, root, apply_mod.default_session(),
                                                _connectors(root, known_hosts, host_keys))
        emit(snap.to_dict(), as_json, lambda d: snap.text())

    guarded(body, as_json=as_json)


@etcd_app.command("restore")
def etcd_restore(
    snapshot: Path = typer.Argument(..., help="A snapshot file (from <state>/backups)."),
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """Disaster recovery: stop the apiservers and etcd, restore the snapshot on every member (old data moved
    aside), start etcd, flanneld and the apiservers again."""
    from installer import apply as apply_mod
    from installer import etcd_backup
    from installer import etcd_restore as er

    def body() -> None:
        root = state or _default_state()
        inv = inventory_mod.load(inventory)
        p = etcd_backup.require_pki(root)
        members = er.plan(inv, snapshot)
        with runlock.hold(root, "etcd restore"):
            for line in er.plan_lines(inv, snapshot, members):
                _out(line)
            d = er.restore(inv, p, snapshot, members, apply_mod.default_session(),
                           _connectors(root, known_hosts, host_keys), _out)
        emit(d, as_json, lambda d: f"etcd restored from {d['snapshot']}; run `installer check`")

    guarded(body, as_json=as_json)


@certs_app.command("renew")
def certs_renew(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    as_json: bool = JSON,
) -> None:
    """Reissue certificates that expire within cluster.renew_within_days (or mismatch), then roll them out."""
    # the PKI step of every converge reissues what is due; the rolling restarts roll it out
    _apply(bundle, inventory, pub, state, known_hosts, host_keys, as_json, command="certs renew")


@app.command()
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

    from installer import bundle as fmt
    from installer.errors import Error
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
        layout_dir, tmp = _layout_of(source, pub, fmt, Error, tempfile)
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
        root = state or _default_state()
        with runlock.hold(root, "seed"):  # uses the state's Harbor password and CA while no apply changes them
            access = harbor_install.access(inv, root, pki_mod.Pki(root).crt_path("ca"))
            if inv.registry.mode == "install" and not access.get("password"):
                raise Error(f"no generated Harbor admin password in {root}", context="seeding images",
                            hint="pass the --state directory `installer apply` used (it installed Harbor)")
            layout_dir, tmp = _layout_of(source, pub, fmt, Error, tempfile)
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


def _layout_of(source: Path, pub: Optional[Path], fmt, Error, tempfile):
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
    fmt.unpack_bundle(source, fmt.load_public_key(pub), tmp / "bundle")
    return tmp / "bundle" / "images", tmp


def main() -> None:
    app()


if __name__ == "__main__":
    main()
