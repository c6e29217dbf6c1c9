"""The commands that converge or change the cluster (plan, apply, upgrade, add-node, remove-node) and
`installer check`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from contract.cliutil import emit, guarded
from installer import cli_common as common
from installer import inventory as inventory_mod
from installer import runlock
from installer.cli_common import BUNDLE, HOST_KEYS, INVENTORY, JOBS, JSON, KNOWN_HOSTS, PUB, STATE


def plan(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 0 when there is nothing to "
                                           "do, 2 when apply would change something, 1 on any error."),
    as_json: bool = JSON,
) -> None:
    """Print what apply would change, per phase and host, with diffs (secrets show only "changed"); writes nothing."""
    from installer import apply as apply_mod

    changes: List[bool] = []

    def body() -> None:
        root = state or common.default_state()
        p = apply_mod.plan_command(inventory, bundle, pub, root, common.options(root, known_hosts, host_keys, jobs))
        emit(p.to_dict(), as_json, lambda d: p.text())
        if p.images is not None and not p.images.ok:  # zero egress: exit 1 naming every offending reference
            raise p.images.error()
        changes.append(not p.empty)

    try:
        guarded(body, as_json=as_json)
    except SystemExit as e:  # guarded's exit with the error's code
        if detailed_exitcode and e.code:
            raise typer.Exit(1) from None  # 2 means "changes" here: every error, bad input included, is 1
        raise
    if detailed_exitcode and any(changes):
        raise typer.Exit(2)


def _apply_text(d: dict) -> str:
    from installer import apply as apply_mod

    return apply_mod.evidence_text(d)


def apply(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Verify the bundle, then bring every host to the desired state phase by phase, and check the cluster."""
    converge(bundle, inventory, pub, state, known_hosts, host_keys, jobs, as_json, command="apply")


def converge(bundle: Path, inventory: Path, pub: Path, state: Optional[Path], known_hosts: Optional[Path],
             host_keys: str, jobs: int, as_json: bool, focus: Optional[List[str]] = None, *, command: str) -> None:
    """apply, add-node and certs renew: one converge, optionally focused on some hosts."""
    def body() -> None:
        root = state or common.default_state()
        inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        with runlock.hold(root, command):  # one run per state directory: refuses at once, naming the holder
            _converge(bundle, inventory, pub, root, known_hosts, host_keys, jobs, as_json, focus)

    guarded(body, as_json=as_json)


def _converge(bundle: Path, inventory: Path, pub: Path, root: Path, known_hosts: Optional[Path], host_keys: str,
              jobs: int, as_json: bool, focus: Optional[List[str]]) -> None:
    from contract.errors import Error
    from installer import apply as apply_mod

    if focus:
        inv = inventory_mod.load(inventory)
        unknown = [n for n in focus if n not in {h.name for h in inv.hosts}]
        if unknown:
            raise Error(f"not in the inventory: {', '.join(unknown)}", context="adding nodes",
                        hint="add the host to the inventory first, then run add-node with its name")
    d = apply_mod.apply_command(inventory, bundle, pub, root, common.options(root, known_hosts, host_keys, jobs),
                                focus=focus)
    emit(d, as_json, _apply_text)


def upgrade(
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """apply with a newer bundle: a later Kubernetes patch release of the same MAJOR.MINOR (exit 2 on a minor or
    major jump or a downgrade; "already at" and exit 0 on the same release); the evidence lists every version change."""
    from installer import apply as apply_mod

    def body() -> None:
        root = state or common.default_state()
        inventory_mod.load(inventory)  # a bad inventory is refused before the lock creates the state dir
        with runlock.hold(root, "upgrade"):
            d = apply_mod.upgrade_command(inventory, bundle, pub, root,
                                          common.options(root, known_hosts, host_keys, jobs))
        emit(d, as_json, _upgrade_text)

    guarded(body, as_json=as_json)


def _upgrade_text(d: dict) -> str:
    if "already_at" in d:  # the same release: nothing was done, no report written
        return f"already at v{d['already_at'].lstrip('v')}: nothing to do"
    return _apply_text(d)


def add_node(
    node: List[str] = typer.Argument(..., help="Name(s) of the new host(s), already in the inventory."),
    bundle: Path = BUNDLE,
    inventory: Path = INVENTORY,
    pub: Path = PUB,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Join new hosts: only they change, plus the shared files of the others (/etc/hosts); masters stay."""
    converge(bundle, inventory, pub, state, known_hosts, host_keys, jobs, as_json, focus=node,
             command="add-node")


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
        root = state or common.default_state()
        with runlock.hold(root, "remove-node"):
            st = StateDir(root)
            p = pki_mod.Pki(root)
            removals = rn.plan(inv, st, p, node, keep_data)
            for rm in removals:
                for line in rm.plan_lines():
                    common.out(line)
            kh = known_hosts or st.known_hosts_path
            d = rn.remove(inv, st, p, removals, common.connectors(root, known_hosts, host_keys),
                          apply_mod.default_session(), common.out, kh)
        emit(d, as_json, lambda d: "removed: " + ", ".join(d["removed"]))

    guarded(body, as_json=as_json)


def check(
    inventory: Path = INVENTORY,
    state: Optional[Path] = STATE,
    known_hosts: Optional[Path] = KNOWN_HOSTS,
    host_keys: str = HOST_KEYS,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """etcd, /healthz via the VIP, componentstatuses, leaders, nodes Ready, pod network, pulls (exit 1 if not)."""
    from contract.errors import Error
    from installer import apply as apply_mod
    from installer import checks as checks_mod
    from installer import pki as pki_mod
    from installer.egress import egress_results

    def body() -> None:
        inv = inventory_mod.load(inventory)
        root = state or common.default_state()
        p = pki_mod.Pki(root)
        if not p.crt_path("ca").exists():
            raise Error(f"no site PKI in {p.dir}", context="checking the cluster",
                        hint="pass the --state directory that apply used")
        conns = common.connectors(root, known_hosts, host_keys)
        rep = checks_mod.run_all(inv, p, apply_mod.default_session(), conns, jobs)
        rep.results += egress_results(inv, root, apply_mod.default_session())
        emit(rep.as_dict(), as_json, lambda d: rep.text())
        if not rep.ok:
            raise Error(f"{sum(not r.ok for r in rep.results)} cluster check(s) failed", context="checking the cluster",
                        details=[r.line() for r in rep.results if not r.ok],
                        hint="`journalctl -u <unit>` on the host named shows why")

    guarded(body, as_json=as_json)
