"""The planner on an upgrade (a bundle whose executables differ from the ones the hosts run): etcd only when the
bundle's etcd changed, and then one member at a time behind the health gate; a re-run after a roll that stopped
on a host plans only what that run did not do; what a stopped upgrade says it left."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict

from contract.errors import Error
from installer import plan as P
from installer import plan_model, versions
from installer.facts import FileState, UnitState
from installer.plan_model import CONTROL, Gate, StepKind
from tests.unit.test_plan import control_ok, converged, desired, inv, sha  # noqa: F401  (fixtures)

BIN = "/usr/local/bin"
EXECUTABLES = {"etcd": ("etcd", "etcdctl"), "master": ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                                       "kubectl"),
               "node": ("kubelet", "kube-proxy", "kubectl")}


def release(inv, desired, k8s: str = "1.10.3", etcd: str = "3.3.1") -> Dict[str, plan_model.HostDesired]:  # noqa: F811
    """The desired state with the executables of a bundle of that Kubernetes and etcd release."""
    out = {}
    for h in inv.hosts:
        bins = {}
        for role, names in EXECUTABLES.items():
            if h.has(role):
                version = etcd if role == "etcd" else k8s
                bins.update({f"{BIN}/{n}": plan_model.Source(sha(f"{n} {version}".encode()), f"{version}!{n}")
                             for n in names})
        out[h.name] = replace(desired[h.name], binaries=bins)
    return out


def steps_of(plan, phase: str):
    return [(s.host, s.kind, s.target) for w in next(p for p in plan.phases if p.name == phase).waves
            for s in (*w.steps, *w.gates)]


def test_an_upgrade_with_the_same_etcd_plans_no_etcd_step(inv, desired):  # noqa: F811
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4")
    plan = P.build(inv, new, converged(inv, old), control_ok(inv))
    assert steps_of(plan, "etcd") == []
    assert not [s for s in plan.steps if s.target == "etcd" or s.target.startswith(f"{BIN}/etcd")]
    # the Kubernetes executables do roll: masters one at a time, then the nodes
    assert [w.hosts for w in next(p for p in plan.phases if p.name == "masters").waves] == [["h1"], ["h2"], ["h3"]]
    assert ("h4", StepKind.BINARY, f"{BIN}/kubelet") in steps_of(plan, "nodes")


def test_an_upgrade_with_a_new_etcd_rolls_the_members_one_at_a_time_behind_the_health_gate(inv, desired):  # noqa: F811
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4", etcd="3.3.2")
    plan = P.build(inv, new, converged(inv, old), control_ok(inv), pending={})
    etcd = next(p for p in plan.phases if p.name == "etcd")
    assert etcd.rolling
    order = []
    for w in etcd.waves:
        hosts = sorted({s.host for s in w.steps} - {CONTROL})
        assert len(hosts) <= 1, w  # never two members in one wave
        for s in w.steps:
            if s.kind is StepKind.GATE:
                order.append(("others healthy", s.items))
            elif s.kind in (StepKind.BINARY, StepKind.RESTART):
                order.append((s.host, s.kind, s.target))
        order += [("health", g.items) for g in w.gates]
    members = ("h1", "h2", "h3")
    want = []
    for m in members:
        want += [("others healthy", tuple(n for n in members if n != m)), (m, StepKind.BINARY, f"{BIN}/etcd"),
                 (m, StepKind.BINARY, f"{BIN}/etcdctl"), (m, StepKind.RESTART, "etcd"), ("health", members)]
    assert order == want
    gates = [g for w in etcd.waves for g in w.gates]
    assert {g.target for g in gates} == {Gate.ETCD_HEALTH}
    # and before the masters: the apiservers restart against a cluster that is whole again
    names = [p.name for p in plan.phases]
    assert names.index("etcd") < names.index("masters")


def _stopped_on_h4(inv, desired):  # noqa: F811
    """Facts after an upgrade that stopped on h4: h1..h3 at 1.10.4 and restarted, h4 drained (cordoned and marked)
    with kube-proxy and kubectl written but its kubelet refused, h5 untouched; pending as the executor left it."""
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4")
    states = converged(inv, old)
    for n in ("h1", "h2", "h3"):
        states[n] = converged(inv, new)[n]
    f = states["h4"].facts
    written = {p: FileState(s.sha256, s.mode, "root", "root") for p, s in new["h4"].binaries.items()
               if p != f"{BIN}/kubelet"}
    states["h4"] = plan_model.HostState(replace(f, files=dict(f.files, **written)))
    control = replace(control_ok(inv), cordoned=("h4",))
    return new, states, control, {"h4": {"kube-proxy", "kubelet"}}


def test_a_rerun_after_a_roll_stopped_on_a_node_plans_only_what_is_left(inv, desired):  # noqa: F811
    new, states, control, pending = _stopped_on_h4(inv, desired)
    plan = P.build(inv, new, states, control, pending=pending)
    assert not [s for s in plan.steps if s.host in ("h1", "h2", "h3")]  # upgraded: not touched again
    assert steps_of(plan, "masters") == [] and steps_of(plan, "etcd") == []
    nodes = next(p for p in plan.phases if p.name == "nodes")
    assert nodes.rolling
    acting = [(s.host, s.kind, s.target) for s in plan.steps if s.acts]
    # h4 first, behind its Ready gate; a daemon-reload because the stopped run may have written a unit file
    assert acting[:6] == [(CONTROL, StepKind.DRAIN, "h4"), ("h4", StepKind.BINARY, f"{BIN}/kubelet"),
                          ("h4", StepKind.DAEMON_RELOAD, "daemon-reload"), ("h4", StepKind.RESTART, "kubelet"),
                          ("h4", StepKind.RESTART, "kube-proxy"), (CONTROL, StepKind.UNCORDON, "h4")], acting
    assert acting.index((CONTROL, StepKind.UNCORDON, "h4")) < acting.index((CONTROL, StepKind.DRAIN, "h5"))
    assert [t for h, k, t in acting if h == "h4" and k is StepKind.BINARY] == [f"{BIN}/kubelet"]  # not written again
    assert [t for h, k, t in acting if h == "h5" and k is StepKind.BINARY] == [f"{BIN}/kube-proxy", f"{BIN}/kubectl",
                                                                             f"{BIN}/kubelet"]


def test_a_rerun_after_a_node_whose_new_kubelet_did_not_start_starts_it_and_uncordons_it(inv, desired):  # noqa: F811
    new, states, control, _ = _stopped_on_h4(inv, desired)
    f = states["h4"].facts
    files = dict(f.files, **{p: FileState(s.sha256, s.mode, "root", "root") for p, s in new["h4"].binaries.items()})
    states["h4"] = plan_model.HostState(replace(f, files=files, units=dict(
        f.units, kubelet=UnitState("loaded", "failed", "failed", "enabled"))))
    plan = P.build(inv, new, states, control, pending={"h4": {"kube-proxy", "kubelet"}})
    acting = [(s.host, s.kind, s.target) for s in plan.steps if s.acts]
    assert not [a for a in acting if a[0] in ("h1", "h2", "h3") or (a[0] == "h4" and a[1] is StepKind.BINARY)]
    assert ("h4", StepKind.RESTART, "kubelet") in acting and (CONTROL, StepKind.UNCORDON, "h4") in acting
    nodes = next(p for p in plan.phases if p.name == "nodes")
    # h4 started first and waited for (Ready) before anything else; its uncordon follows
    first = nodes.waves[0]
    assert {s.host for s in first.steps} == {"h4"} and [g.items for g in first.gates] == [("h4",)]


# ------------------------------------------------------------------ what a stopped upgrade says it left

def _executed(plan, upto):
    """The acting steps of the plan before the `upto`-th one, as Outcome.executed lists them."""
    return [s.to_dict() for s in [s for s in plan.steps if s.acts][:upto]]


def test_a_stopped_upgrade_says_which_hosts_are_done_where_it_stopped_and_what_is_untouched(inv, desired):  # noqa: F811
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4")
    plan = P.build(inv, new, converged(inv, old), control_ok(inv))
    acting = [s for s in plan.steps if s.acts]
    k = next(i for i, s in enumerate(acting) if s.host == "h4" and s.target == f"{BIN}/kubelet")
    executed, failed = _executed(plan, k), [acting[k].to_dict()]
    assert versions.progress(plan, executed, failed) == {"failed": ["h4"], "done": ["h1", "h2", "h3"], "partly": [],
                                                         "untouched": ["h5"]}
    e = versions.stopped(Error("h4: binary /usr/local/bin/kubelet failed in phase nodes", details=["mv: denied"],
                               hint="run it by hand on h4 to see why"), plan, executed, failed,
                         versions.Decision("1.10.3", "1.10.4"))
    assert e.details == ["mv: denied", "the upgrade to 1.10.4 stopped on h4 (left cordoned: h4): done on h1, h2, h3; "
                                       "not touched: h5"]
    assert e.hint.startswith("run it by hand on h4 to see why; then run `installer upgrade` with the same bundle "
                             "again: it resumes where this run stopped")
    assert "uncordoned once it is upgraded" in e.hint


def test_a_failed_gate_of_the_control_host_blames_the_hosts_of_its_wave(inv, desired):  # noqa: F811
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4")
    plan = P.build(inv, new, converged(inv, old), control_ok(inv))
    acting = [s for s in plan.steps if s.acts]
    k = next(i for i, s in enumerate(acting) if s.kind is StepKind.UNCORDON and s.target == "h4")
    ready = [g for p in plan.phases for w in p.waves for g in w.gates if g.items == ("h4",)][0]
    failed = [dict(ready.to_dict(), after=["h4"])]  # h4's kubelet restarted but never Ready
    got = versions.progress(plan, _executed(plan, k), failed)
    assert got == {"failed": ["h4"], "done": ["h1", "h2", "h3"], "partly": [], "untouched": ["h5"]}
    e = versions.stopped(Error("gate failed"), plan, _executed(plan, k), failed, versions.Decision("1.10.3", "1.10.4"))
    assert e.hint.startswith("fix the cause, then run `installer upgrade` with the same bundle again")


def test_a_roll_stopped_on_its_first_step_touched_nothing_else(inv, desired):  # noqa: F811
    old, new = release(inv, desired), release(inv, desired, k8s="1.10.4")
    plan = P.build(inv, new, converged(inv, old), control_ok(inv))
    first = [s for s in plan.steps if s.acts][0]
    assert (first.host, first.kind) == ("h1", StepKind.BINARY)
    assert versions.progress(plan, [], [first.to_dict()]) == {"failed": ["h1"], "done": [], "partly": [],
                                                              "untouched": ["h2", "h3", "h4", "h5"]}


def test_the_yum_repo_file_does_not_name_the_kubernetes_release(inv):  # noqa: F811
    """The packages phase writes it on every host at once, before the roll: a patch upgrade with the same RPMs
    must leave it alone, or it would touch the hosts after a failed one."""
    from installer.render import render_all

    repo = "/etc/yum.repos.d/k8s-offline.repo"
    for kw in ({}, {"gpgcheck": True, "gpgkey": ["file:///etc/pki/rpm-gpg/k"], "unchecked_repo": True}):
        a, b = (render_all(inv, pki_files={}, versions={"kubernetes": v}, **kw) for v in ("1.10.3", "1.10.4"))
        assert all(a[h.name][repo] == b[h.name][repo] for h in inv.hosts)
        assert b"1.10" not in a["h1"][repo].content
