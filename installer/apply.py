"""`installer apply`: verify the bundle, unpack, PKI, render, gather facts, plan, execute phase by phase, check.

The executor is the only code that changes hosts, and only through connectors. Every executed step is
journaled in the state directory; units whose files changed are kept in `pending.json` until they were
restarted, so a run that stopped midway (host unreachable, gate failed) is finished by the next one.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import requests

from contract.bundle import layout
from contract.errors import Error
from installer import checks as checks_mod
from installer import egress, etcd_backup, etcd_membership, harbor_install, versions
from installer import plan as plan_mod
from installer.executor import Executor, Outcome, StepFailed  # noqa: F401  (re-exported)
from installer.gather import control_state, gather_states
from installer.inventory import Inventory
from installer.options import Hosts, Options, Out, default_session, ssh_connectors  # noqa: F401  (re-exported)
from installer.plan_model import Plan
from installer.report import evidence, evidence_text, trust_summary  # noqa: F401  (re-exported)
from installer.site import (  # noqa: F401  (re-exported)
    Bundle,
    Site,
    desired_state,
    load_site,
    prepare_bundle,
    record_etcd_members,
    record_hosts,
)

SETTLE_TRIES, SETTLE_PAUSE = 10, 3.0


def make_plan(site: Site, hosts: Hosts, opts: Options, focus: Optional[Sequence[str]] = None, *,
              read_only: bool = False) -> Plan:
    """Gather facts of the hosts concerned and plan (read_only: `plan`, which writes nothing to the hosts)."""
    refusal = etcd_membership.moved_members(site.state.etcd_members(), site.inv)  # before any host is asked
    if refusal:
        raise refusal
    with ThreadPoolExecutor(max_workers=1) as pool:  # registry and etcd over HTTPS while the hosts answer
        control = pool.submit(control_state, site, opts.session)
        states = gather_states(site, hosts, host_names(site.inv), opts, read_only=read_only)
        control_now = control.result()
    plan = plan_mod.build(site.inv, site.desired, states, control_now, pending=site.state.pending.load(),
                          focus=focus, registry_host=site.registry_host)
    return dataclasses.replace(plan, images=images_report(site))


def host_names(inv: Inventory) -> List[str]:
    """Every host a run talks to: the inventory's, then the registry host Harbor is installed on."""
    reg = harbor_install.registry_host(inv)
    return [h.name for h in inv.hosts] + ([reg.name] if reg is not None else [])


def open_site(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options) -> Tuple[Site, Hosts]:
    """load_site, and the run's host connections: opened as soon as the inventory is read, so the ssh
    handshakes overlap the bundle check, the PKI and the rendering. Closed again when loading fails."""
    early: List[Hosts] = []

    def connect(inv: Inventory) -> None:
        early.append(Hosts(inv, opts))
        early[-1].open_early(host_names(inv))

    try:
        site = load_site(inventory, bundle_path, pub, state_dir, opts.out, on_inventory=connect)
    except BaseException:
        for h in early:
            h.close()
        raise
    if early and early[-1].inv is site.inv:
        return site, early[-1]
    for h in early:
        h.close()
    return site, Hosts(site.inv, opts)


def images_report(site: Site, registry: Optional[object] = None) -> egress.Report:
    """Every image reference of the desired state, judged against the bundle (and a registry client if given)."""
    r = site.inv.registry
    bundle = egress.bundle_images(site.bundle.dir / layout.IMAGES_DIR, r.endpoint, r.project, site.naming)
    return egress.scan({h: d.files for h, d in site.desired.items()}, r.endpoint, bundle, registry)


def images_results(site: Site, session: requests.Session) -> List[checks_mod.Result]:
    """The check "images (zero egress)" after apply: every reference in the site registry with the bundle's digest."""
    try:
        registry = checks_mod.registry_client(site.inv, session, **site.registry_access)
        return egress.results(images_report(site, registry))
    except Error as e:  # e.g. an unreadable password file: a failed check, not a crash after a good apply
        return [checks_mod.Result(egress.CHECK_NAME, site.inv.registry.endpoint, False, e.message)]


def plan_command(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options):
    """`installer plan`: what apply would do now (a dryrun.PlanResult); the state directory is only read."""
    from installer import dryrun

    with dryrun.scratch(Path(state_dir)) as scratch:  # whatever loading the site writes goes to a scratch copy
        site, hosts = open_site(inventory, bundle_path, pub, scratch.root, opts)
        try:
            plan = make_plan(site, hosts, opts, read_only=True)
        finally:
            hosts.close()
        return scratch.result(plan, site)


def apply_command(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options,
                  focus: Optional[Sequence[str]] = None, upgrade: Optional[versions.Decision] = None) -> dict:
    """`installer apply` (and add-node with focus, upgrade with the decision of its version policy): the whole
    pipeline; returns the evidence report. Only upgrade changes the Kubernetes version a cluster was recorded with."""
    t0 = opts.clock()
    etcd_membership.refuse_moved_early(Path(inventory), Path(state_dir))  # before the PKI follows the new address
    site, hosts = open_site(inventory, bundle_path, pub, state_dir, opts)
    try:
        previous = site.state.applied()  # what the last successful run converged to (None before the first)
        if upgrade is None:
            versions.guard_apply(previous, site.bundle.components, site.state.applied_path)
        now = versions.host_versions(site.inv, versions.component_versions(site.bundle.components))
        plan = make_plan(site, hosts, opts, focus=focus)
        if plan.problems:
            raise Error(f"preflight failed on {len({c.host for c in plan.problems})} host(s); nothing was changed",
                        context="checking the hosts before applying",
                        details=[f"{c.host}: {c.name}: {c.detail}" for c in plan.problems],
                        hint="fix what is listed, then run apply again")
        if plan.images is not None and not plan.images.ok:
            raise plan.images.error("checking every image reference before applying; nothing was changed")
        record_hosts(site)  # before the first change: remove-node can reach every host a run touched
        backup = None
        if plan.empty:
            opts.out("nothing to do: every host matches the desired state")
            outcome = Outcome(plan)
        else:  # a snapshot first when the plan changes etcd or a master and etcd runs
            backup = etcd_backup.before_changes(site.inv, site.pki, site.state.root, plan, opts.session,
                                                hosts.__getitem__, opts.out)
            executor = Executor(site, hosts, opts)
            try:
                outcome = executor.run(plan)
            except Error as e:  # an upgrade says what it left: the hosts done, the one it stopped on, the rest
                if upgrade is not None and executor.outcome is not None:
                    o = executor.outcome
                    raise versions.stopped(e, plan, o.executed, o.failed, upgrade) from None
                raise
        # the etcd group as far as it joined: a member whose join the plan deferred is not checked yet
        checked = etcd_membership.joined(site.inv, site.state.etcd_members())
        # the checks reach the hosts over the run's open connections (no second ssh handshake per host)
        results = checks_mod.run_all(checked, site.pki, opts.session, hosts.connector_for,
                                     opts.max_parallel) if opts.checks else None
        # after restarts the leases of controller-manager/scheduler take a few seconds to be taken again: a
        # check that fails is repeated for up to SETTLE_TRIES * SETTLE_PAUSE seconds (also after an empty plan)
        for _ in range(SETTLE_TRIES if results is not None else 0):
            if results.ok:
                break
            opts.sleep(SETTLE_PAUSE)
            results = checks_mod.run_all(checked, site.pki, opts.session, hosts.connector_for, opts.max_parallel)
    finally:
        hosts.close()
    if results is not None:  # seeded by now: every reference must be there with the bundle's digest
        results.results += images_results(site, opts.session)
    changed = {"upgrade": upgrade.to_dict() if upgrade else None,
               "hosts": versions.changes(previous, now, list(focus) if focus else None)}
    report = dict(evidence(site, plan, outcome, results, opts.clock() - t0), etcd_backup=backup, versions=changed)
    site.state.write_report(report, evidence_text(report))
    if results is not None and not results.ok:
        raise Error("the cluster checks failed after apply", context="verifying the cluster",
                    details=[r.line() for r in results.results if not r.ok],
                    hint=f"see {site.state.root}/report.txt; `installer check` repeats the checks")
    if results is not None:
        record_etcd_members(site)  # a cluster formed before the record existed: its healthy members
    b = site.bundle
    site.state.set_applied(versions.applied_record(
        {"name": b.name, "version": b.version, "manifest_sha256": b.digest},
        versions.component_versions(b.components), now, previous, list(focus) if focus else None))
    return report


def upgrade_command(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options) -> dict:
    """`installer upgrade`: apply with a newer bundle, behind the version policy (installer.versions.decide).

    The signed manifest says the bundle's Kubernetes version (its signature is checked first); the cluster's is
    what the last successful apply recorded. A later patch release converges as apply does (the bundle verified
    member by member while it is unpacked); a refusal, or the same release (nothing to do), verifies the whole
    bundle too before saying so."""
    from contract import bundle as fmt
    from installer.state import StateDir

    st = StateDir(Path(state_dir))
    key = fmt.load_public_key(Path(pub))
    manifest, _, _ = fmt.read_manifest(Path(bundle_path), key)
    try:
        decision = versions.decide(st.applied(), manifest.components, st.applied_path)
    except Error:
        fmt.verify_bundle(Path(bundle_path), key)  # a damaged bundle is said first, as apply would
        raise
    if not decision.same:
        opts.out(f"upgrade: Kubernetes {decision.current} -> {decision.target}")
        return apply_command(inventory, bundle_path, pub, state_dir, opts, upgrade=decision)
    fmt.verify_bundle(Path(bundle_path), key)
    opts.out(f"upgrade: already at v{decision.target.lstrip('v')}: nothing to do")
    return {"upgrade": decision.to_dict(), "already_at": decision.target, "nothing_to_do": True}


__all__ = ["Options", "ssh_connectors", "default_session", "prepare_bundle", "desired_state", "load_site",
           "make_plan", "plan_command", "apply_command", "upgrade_command", "Executor", "Hosts", "evidence",
           "evidence_text"]
