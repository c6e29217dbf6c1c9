"""Pure planning: (inventory, desired state per host, facts per host, control-side facts) -> ordered phases.

Nothing here touches a host or the network: `apply` gathers facts, calls `build`, prints or executes the
result. A step is planned only when desired and actual differ, so a converged cluster plans nothing.

Phases run in this order; within a phase, a *wave* runs its hosts in parallel (each host's steps in
order) and then its gates. Rolling phases have one wave per host, so a gate guards every host:

  preflight  checks only (OS, arch, clock, ports, disk, rpm); any failure stops apply before a change
  packages   the bundle's yum repo copied to each host that needs packages, then yum install
  os-prep    /etc/hosts, sysctl.d, modules-load.d, hostname, swap, SELinux, firewalld
  registry   install mode: on the registry host docker, docker-compose, the site-CA certificate, the unpacked
             Harbor offline installer, harbor.cfg and install.sh (only when one of them changed or Harbor does
             not answer), gate: /api/systeminfo over TLS; then the Harbor project and seeding the bundle's
             images (control host)
  etcd       all members at once when none runs (Type=notify waits for quorum), else rolling and
             quorum-safe: stopped or unhealthy members first, a healthy one only once all others are healthy
  etcd-membership  one member joins or leaves when the inventory's etcd group differs from the recorded
             membership (installer.etcd_membership), each step behind a health gate
  flannel-network  the v2 key <prefix>/config (control host, etcd client cert)
  flannel    flanneld on every master and node in parallel (Type=notify: a start returns once the lease and
             /run/flannel/subnet.env exist), so the apiservers reach pod IPs through flannel.1
  masters    one at a time, gate: that apiserver's /healthz (all at once, then each gate, while none of them
             runs: a first install has no availability to keep)
  lb         haproxy + keepalived one at a time, gate: /healthz through the VIP (all at once, then one VIP gate,
             while neither runs anywhere)
  nodes      docker, CNI, kubelet, kube-proxy in parallel, gate: nodes Ready
  addons     manifests on the first master, then `kubectl apply` there (also when an earlier run wrote them
             but did not apply them: they stay pending in the state dir until kubectl exits 0)

`installer.egress` lists every image the desired state names (Plan.images): plan and apply refuse any that is
not the site registry's or not in the bundle.

This module orders the phases; the rules it plans by are in `plan_rules` (read from the component table,
`components`, which also names each phase's gate), one host's steps of a phase come from `plan_steps`, and what
it reads and returns is `plan_model`.
"""

from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from installer import components, etcd_auth, etcd_member
from installer import etcd_membership as em
from installer import secrets_rewrite as sr
from installer.inventory import Host, Inventory
from installer.plan_model import (
    CONTROL,
    ControlState,
    Gate,
    HostDesired,
    HostState,
    Phase,
    Plan,
    Step,
    StepKind,
    Wave,
)
from installer.plan_rules import (
    ADDONS_DIR,
    ADDONS_UNIT,
    SHARED_FILES,
    UNIT_PHASE,
    addons_command,
)
from installer.plan_steps import files_steps, os_prep_steps, packages_step, registry_host_steps, unit_steps
from installer.preflight import preflight
from installer.render import BIN_DIR, PATHS, UNIT_DIR


def _serving(comp: components.Component, hosts: Sequence[Host], states: Mapping[str, HostState]) -> bool:
    """Whether any of the hosts runs one of the component's gated units now (its facts): then its phase rolls."""
    for h in hosts:
        units = states[h.name].facts.units or {}
        if any(units.get(u) is not None and units[u].running for u in comp.gate_units):
            return True
    return False


def _etcd_rolling(active: Sequence[Host], per_host: Mapping[str, List[Step]], states: Mapping[str, HostState],
                  control: ControlState, cluster: Sequence[str], gate: Step,
                  joining: Sequence[str] = ()) -> Tuple[Wave, ...]:
    """Quorum-safe rolling waves: members that do not run or are unhealthy first (starting them can only
    restore quorum), then the healthy ones, each after a gate that every *other* member is healthy, so a
    healthy member is never restarted while another one is down."""
    unhealthy = set(control.etcd_unhealthy or ())

    def down(h: Host) -> bool:
        us = (states[h.name].facts.units or {}).get("etcd")
        return us is None or not us.running

    order = ([h for h in active if down(h)] + [h for h in active if not down(h) and h.name in unhealthy]
             + [h for h in active if not down(h) and h.name not in unhealthy])
    waves: List[Wave] = []
    for h in order:
        if h.name in joining or (not down(h) and h.name not in unhealthy):
            others = tuple(n for n in cluster if n != h.name)
            waves.append(Wave((Step(CONTROL, StepKind.GATE, Gate.ETCD_OTHERS_HEALTHY, f"every etcd member but {h.name} "
                                    f"answers /health before {h.name} "
                                    f"{'rejoins' if h.name in joining else 'restarts'} (quorum kept)", items=others,
                                    units=components.ETCD.gate_units),)))
        waves.append(Wave(tuple(per_host[h.name]), (gate,)))
    return tuple(waves)


def _replaces_running_node(steps: Sequence[Step], st: HostState) -> bool:
    """Whether a node's steps replace the kubelet or kube-proxy executable while its kubelet runs."""
    kubelet = (st.facts.units or {}).get("kubelet")
    return kubelet is not None and kubelet.running and any(
        s.kind is StepKind.BINARY and s.target in (f"{BIN_DIR}/kubelet", f"{BIN_DIR}/kube-proxy") for s in steps)


def build(
    inv: Inventory,
    desired: Mapping[str, HostDesired],
    states: Mapping[str, HostState],
    control: ControlState = ControlState(),
    pending: Optional[Mapping[str, Set[str]]] = None,
    focus: Optional[Iterable[str]] = None,
    registry_host: Optional[Host] = None,
) -> Plan:
    """The whole plan. `pending`: units left to restart by an unfinished run; `focus`: add-node's hosts
    (other hosts then only get SHARED_FILES, nothing restarts there, and their other changes are deferred);
    `registry_host`: install mode's Harbor host (its desired state and facts under its name)."""
    pending = {h: set(u) for h, u in (pending or {}).items()}
    focus_set = set(focus) if focus is not None else None
    hosts = [h for h in inv.hosts if h.name in desired and h.name in states]
    reg = registry_host if registry_host is not None and registry_host.name in desired \
        and registry_host.name in states and desired[registry_host.name].harbor is not None else None
    checked = hosts + ([reg] if reg is not None else [])
    checks = preflight(inv, {h.name: desired[h.name] for h in checked}, states)
    phases: List[Phase] = []
    deferred: List[str] = []

    def in_focus(h: Host) -> bool:
        return focus_set is None or h.name in focus_set

    def host_phase(h: Host, phase: str) -> List[Step]:
        d, st = desired[h.name], states[h.name]
        pend = pending.get(h.name, set())
        steps, restart = files_steps(h.name, d, st, phase, h, pend)
        units = [u for u in d.units if UNIT_PHASE.get(u) == phase]
        unit_files = any(s.kind is StepKind.PUT and s.target.startswith(UNIT_DIR + "/") for s in steps)
        steps += unit_steps(h.name, units, st, restart, pend, unit_files)
        return steps

    # packages
    waves = []
    for h in hosts:
        if not in_focus(h):
            continue
        d, st = desired[h.name], states[h.name]
        steps, _ = files_steps(h.name, d, st, "packages", h, set())
        pkgs = packages_step(h.name, d, st)
        if pkgs:
            steps.append(pkgs)
        if steps:
            waves.append(steps)
    phases.append(Phase("packages", (Wave(tuple(s for w in waves for s in w)),) if waves else ()))

    # os-prep (add-node: other hosts only get the shared files)
    steps = []
    for h in hosts:
        st_h = os_prep_steps(h.name, h, inv, desired[h.name], states[h.name])
        if in_focus(h):
            steps += st_h
        else:
            keep = [s for s in st_h if s.kind is StepKind.PUT and s.target in SHARED_FILES]
            steps += keep
            deferred += [f"{h.name}: {s.line()}" for s in st_h if s not in keep and s.acts]
    phases.append(Phase("os-prep", (Wave(tuple(steps)),) if steps else ()))

    # registry: install mode's Harbor host first (its own wave and gate), then project and seed from here
    reg_waves: List[Wave] = []
    if reg is not None:
        r_steps, r_gates = registry_host_steps(reg, desired[reg.name], states[reg.name], control)
        if focus_set is not None:
            deferred += [f"{reg.name}: {s.line()}" for s in r_steps if s.acts]
        elif r_steps:
            reg_waves.append(Wave(tuple(r_steps), tuple(r_gates)))
    steps = []
    if control.registry_skip:
        if control.images_missing is None or control.images_missing:
            steps.append(Step(CONTROL, StepKind.SKIP, "registry", control.registry_skip))
    elif control.images_missing is None:
        steps.append(Step(CONTROL, StepKind.HARBOR_PROJECT, inv.registry.project, "create the project when the registry "
                          "is Harbor (a plain registry has none)"))
        steps.append(Step(CONTROL, StepKind.SEED, inv.registry.endpoint, "registry not checked yet: push what is missing"))
    elif control.images_missing:
        steps.append(Step(CONTROL, StepKind.HARBOR_PROJECT, inv.registry.project, "create the project when the registry "
                          "is Harbor (a plain registry has none)"))
        steps.append(Step(CONTROL, StepKind.SEED, inv.registry.endpoint,
                          f"{len(control.images_missing)} of {control.images_total} images missing",
                          items=tuple(control.images_missing)))
    phases.append(Phase("registry", tuple(reg_waves) + ((Wave(tuple(steps)),) if steps else ())))

    # etcd: all members at once when none runs (Type=notify: each start waits for quorum), else rolling
    # (a host new in the etcd group joins in the etcd-membership phase after it: installer.etcd_membership)
    recorded = dict(control.etcd_members)
    members = [h for h in hosts if h.has("etcd") and in_focus(h)]
    per_host = {h.name: em.quiet(host_phase(h, "etcd"), states[h.name], pending.get(h.name, set())) for h in members}
    newcomers = {n: per_host.pop(n) for n in list(per_host) if recorded and n not in recorded}
    members = [h for h in members if h.name not in newcomers]
    joining = {n: why for n, why in etcd_member.joiners(inv, states, control).items() if n in per_host}
    for n, why in joining.items():
        per_host[n] = etcd_member.with_join(per_host[n], inv.host(n), why)
    starting = {n for n, s_h in per_host.items() if any(s.kind is StepKind.RESTART for s in s_h)}
    change, later = em.this_run(inv, states, control, starting, focus=focus_set is not None,
                                  rejoining=list(joining))
    deferred += later
    cluster = em.cluster_names(inv, change, recorded)
    active = [h for h in members if per_host.get(h.name)]
    any_running = any((states[h.name].facts.units or {}).get("etcd") and
                      states[h.name].facts.units["etcd"].running for h in hosts if h.has("etcd"))
    restarting = [h for h in active if any(s.kind is StepKind.RESTART for s in per_host[h.name])]
    gate = Step(CONTROL, StepKind.GATE, Gate(components.ETCD.gate), "every member answers /health over TLS",
                items=cluster, units=components.ETCD.gate_units)
    if active and any_running and restarting:
        phases.append(Phase("etcd", _etcd_rolling(active, per_host, states, control, cluster, gate, joining),
                            rolling=True))
    elif active:
        waves_e = (Wave(tuple(s for h in active for s in per_host[h.name]), (gate,) if restarting else ()),)
        phases.append(Phase("etcd", waves_e))
    else:
        phases.append(Phase("etcd"))
    change_waves = em.waves(change, newcomers.get(change.name, ()) if change else (), states)
    phases.append(Phase(em.PHASE, change_waves, rolling=bool(change_waves)))

    phases.append(etcd_auth.phase(inv, {n: st.facts for n, st in states.items()}, in_focus))

    # flannel network key
    want = None
    if inv.nodes or inv.masters:  # flanneld runs on both
        from installer.render import flannel_network_config

        want = flannel_network_config(inv)
    if want is not None and control.flannel_config != want:
        reason = "missing" if control.flannel_config is None else f"differs: {control.flannel_config}"
        key = Step(CONTROL, StepKind.FLANNEL_KEY, f"{inv.cluster.flannel_prefix}/config", f"{reason} -> {want}",
                   command=want)
        phases.append(Phase("flannel-network", (Wave((key,)),)))
    else:
        phases.append(Phase("flannel-network"))

    # flanneld on every master and node at once (its start blocks until the lease and subnet file exist)
    steps = []
    for h in hosts:
        if "flanneld" not in desired[h.name].units:
            continue
        s_h = host_phase(h, "flannel")
        if not in_focus(h):
            deferred += [f"{h.name}: {s.line()}" for s in s_h if s.acts]
            continue
        steps += s_h
    phases.append(Phase("flannel", (Wave(tuple(steps)),) if steps else ()))

    # masters, then lb: one host at a time, each with its component's gate
    m_c, lb_c = components.MASTER, components.LB
    for comp, gate_for in ((m_c, lambda h: Step(h.name, StepKind.GATE, Gate(m_c.gate),
                                                f"https://{h.address}:{inv.cluster.apiserver_port}/healthz",
                                                units=m_c.gate_units)),
                           (lb_c, lambda h: Step(CONTROL, StepKind.GATE, Gate(lb_c.gate),
                                                 f"https://{inv.cluster.vip}:{inv.cluster.lb_port}/healthz "
                                                 f"(after {h.name})", units=lb_c.gate_units, items=(h.name,)))):
        phase, (role,) = comp.phase, comp.roles
        waves_m = []
        for h in hosts:
            if not h.has(role):
                continue
            steps = host_phase(h, phase)
            if not in_focus(h):
                deferred += [f"{h.name}: {s.line()}" for s in steps if s.acts]
                continue
            if steps:
                restarts = any(s.kind is StepKind.RESTART for s in steps)
                waves_m.append(Wave(tuple(steps), (gate_for(h),) if restarts else ()))
        if len(waves_m) > 1 and not _serving(comp, [h for h in hosts if h.has(role)], states):
            # nothing of this component serves yet (a first install): no availability to keep, so every host
            # starts at once and the gates follow (one VIP gate for the lb: it names all of them)
            gates_m = tuple(g for w in waves_m for g in w.gates)
            if comp is lb_c and gates_m:
                names = tuple(n for g in gates_m for n in g.items)
                gates_m = (Step(CONTROL, StepKind.GATE, Gate(lb_c.gate), f"https://{inv.cluster.vip}:"
                                f"{inv.cluster.lb_port}/healthz (after {', '.join(names)})",
                                units=lb_c.gate_units, items=names),)
            phases.append(Phase(phase, (Wave(tuple(s for w in waves_m for s in w.steps), gates_m),)))
            continue
        phases.append(Phase(phase, tuple(waves_m), rolling=True))

    # nodes: in parallel, then every changed node must be Ready; a running node whose kubelet or kube-proxy
    # executable is replaced (an upgrade) goes one at a time after those, each behind its own Ready gate
    steps = []
    changed_nodes = []
    one_by_one: List[Tuple[str, List[Step]]] = []
    for h in hosts:
        if not h.has("node"):
            continue
        s_h = host_phase(h, "nodes")
        if not in_focus(h):
            deferred += [f"{h.name}: {s.line()}" for s in s_h if s.acts]
            continue
        if _replaces_running_node(s_h, states[h.name]):
            one_by_one.append((h.name, s_h))
            continue
        steps += s_h
        if any(s.kind is StepKind.RESTART for s in s_h):
            changed_nodes.append(h.name)

    def ready(names: Sequence[str]) -> Tuple[Step, ...]:
        node = components.KUBELET
        return (Step(CONTROL, StepKind.GATE, Gate(node.gate), "registered and Ready: " + ", ".join(names),
                     items=tuple(names), units=node.gate_units),) if names else ()

    node_waves = ((Wave(tuple(steps), ready(changed_nodes)),) if steps else ())
    for name, s_h in one_by_one:  # cordon + drain, replace and restart, Ready, uncordon: one node at a time
        node_waves += (Wave((Step(CONTROL, StepKind.DRAIN, name, "its kubelet is replaced: cordon it, evict its "
                                  "pods (DaemonSet and mirror pods stay)"),)),
                       Wave(tuple(s_h), ready([name])),
                       Wave((Step(CONTROL, StepKind.UNCORDON, name, "upgraded and Ready"),)))
    left = [n for n in control.cordoned if n not in {name for name, _ in one_by_one}
            and any(h.name == n and in_focus(h) for h in hosts)]
    if left:  # an earlier run stopped between the drain and the uncordon
        node_waves += (Wave(tuple(Step(CONTROL, StepKind.UNCORDON, n, "cordoned by an earlier run that stopped "
                                       "before its uncordon") for n in left)),)
    phases.append(Phase("nodes", node_waves, rolling=bool(one_by_one)))

    # addons on the first master
    steps = []
    masters = [h for h in hosts if h.has("master")]
    if masters and in_focus(masters[0]):
        m = masters[0]
        puts, _ = files_steps(m.name, desired[m.name], states[m.name], "addons", m, set())
        steps += puts
        if puts or ADDONS_UNIT in pending.get(m.name, set()):
            why = "manifests changed" if puts else "manifests written by an earlier run, not applied yet"
            steps.append(Step(m.name, StepKind.KUBECTL_APPLY, ADDONS_DIR, why,
                              command=addons_command(inv.cluster.dns_addon)))
    # secrets stored before the encryption config: re-written once every master runs with it
    enc = PATHS["encryption_config"]
    writes_enc = [h.name for h in masters if in_focus(h) and any(
        s.kind is StepKind.PUT and s.target == enc for p in phases for w in p.waves for s in w.steps if s.host == h.name)]
    if writes_enc or sr.SECRETS_UNIT in pending.get(CONTROL, set()):
        why = (f"the encryption config is new or changed on {', '.join(writes_enc)}" if writes_enc
               else "an earlier run wrote the encryption config and did not re-write the secrets yet")
        steps.append(Step(CONTROL, StepKind.REWRITE_SECRETS, "secrets", why))
    phases.append(Phase("addons", (Wave(tuple(steps)),) if steps else ()))
    return Plan(tuple(checks), tuple(phases), tuple(deferred))

