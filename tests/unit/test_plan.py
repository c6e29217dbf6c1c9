"""The pure planner as data cases: facts in, steps out."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Dict

import pytest
import yaml

from contract.errors import Error
from installer import etcd_auth, plan_model, plan_rules, preflight
from installer import inventory as inventory_mod
from installer import plan as P
from installer.facts import Facts, FileState, UnitState
from installer.render import File, flannel_network_config, render_all

INV = {
    "cluster": {"name": "t", "vip": "198.18.0.100"},
    "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.0.1", "port": 5000,
                 "insecure": True},
    "hosts": [{"name": f"h{i}", "address": f"198.18.0.1{i}", "roles": ["master", "etcd", "lb"]} for i in (1, 2, 3)]
    + [{"name": "h4", "address": "198.18.0.14", "roles": ["node"]},
       {"name": "h5", "address": "198.18.0.15", "roles": ["node"]}],
}
KEY = "/etc/etcd/pki/server.key"

AUTH_ON = {etcd_auth.PROBE_MEMBER: 1, etcd_auth.PROBE_ADMIN: 0}  # etcd v3 authentication on (converged)


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    p.write_text(yaml.safe_dump(INV))
    return inventory_mod.load(p)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def desired(inv) -> Dict[str, plan_model.HostDesired]:
    pki = {h.name: ({KEY: File(b"-----BEGIN KEY-----\nsecret\n", 0o600)} if h.has("etcd") else {}) for h in inv.hosts}
    rendered = render_all(inv, pki_files=pki)
    out = {}
    for h in inv.hosts:
        bins = {"/usr/local/bin/kubelet": plan_model.Source(sha(b"kubelet"), "k.tar.gz!kubelet")} if h.has("node") else {}
        out[h.name] = plan_model.HostDesired(files=rendered[h.name], binaries=bins, packages=plan_rules.wanted_packages(h),
                                    units=plan_rules.wanted_units(h))
    return out


def converged_facts(name: str, d: plan_model.HostDesired, **kw) -> Facts:
    files = {p: FileState(sha(f.content), f.mode, f.owner, "root") for p, f in d.files.items()}
    files.update({p: FileState(s.sha256, s.mode, "root", "root") for p, s in d.binaries.items()})
    units = {u: UnitState("loaded", "active", "running", "enabled") for u in d.units}
    base = dict(host=name, hostname=name, os_id="centos", os_version="7", os_family="redhat", os_name="CentOS 7",
                arch="x86_64", kernel="3.10", time_offset=0.05, disk_free_kb={"/": 10 << 20, "/var": 10 << 20},
                packages={p: "1-1" for p in d.packages}, files=files, units=units,
                commands=frozenset({"yum", "systemctl"}), kernel_features=frozenset({"bridge-nf", "overlay"}),
                probes=AUTH_ON)
    base.update(kw)
    return Facts(**base)


def converged(inv, desired) -> Dict[str, plan_model.HostState]:
    return {h.name: plan_model.HostState(converged_facts(h.name, desired[h.name])) for h in inv.hosts}


def control_ok(inv) -> plan_model.ControlState:
    return plan_model.ControlState(images_missing=(), images_total=7, flannel_config=flannel_network_config(inv))


def acting(plan: plan_model.Plan):
    return [(s.host, s.kind, s.target) for s in plan.steps if s.acts]


def test_converged_facts_plan_nothing(inv, desired):
    plan = P.build(inv, desired, converged(inv, desired), control_ok(inv))
    assert plan.empty and not plan.problems
    assert acting(plan) == []
    assert "nothing to do" in plan.text()


def test_changed_file_puts_it_and_restarts_exactly_its_unit(inv, desired):
    states = converged(inv, desired)
    path = "/etc/haproxy/haproxy.cfg"
    old = desired["h2"].files[path].content.replace(b"retries 3", b"retries 9")
    f = states["h2"].facts
    files = dict(f.files, **{path: FileState(sha(old), 0o644, "root", "root")})
    states["h2"] = plan_model.HostState(replace(f, files=files), {path: old})
    plan = P.build(inv, desired, states, control_ok(inv))
    assert acting(plan) == [("h2", "put", path), ("h2", "restart", "haproxy")]
    put = next(s for s in plan.steps if s.kind == "put")
    assert "-    retries 9" in put.diff and "+    retries 3" in put.diff
    lb = next(p for p in plan.phases if p.name == "lb")
    assert lb.rolling and [g.target for w in lb.waves for g in w.gates] == ["vip-healthz"]


def test_secret_diff_only_says_changed_and_etcd_rolls(inv, desired):
    states = converged(inv, desired)
    f = states["h1"].facts
    states["h1"] = plan_model.HostState(replace(f, files=dict(f.files, **{KEY: FileState("0" * 64, 0o600, "root", "root")})))
    plan = P.build(inv, desired, states, control_ok(inv))
    put = next(s for s in plan.steps if s.kind == "put")
    assert put.target == KEY and put.diff == "changed (secret)" and "secret" not in plan.text().replace(
        "changed (secret)", "")
    etcd = next(p for p in plan.phases if p.name == "etcd")
    assert etcd.rolling and acting(plan) == [("h1", "put", KEY), ("h1", "restart", "etcd")]
    # a healthy member restarts only once the others are healthy, and the cluster is checked after it
    assert [(s.target, s.items) for s in etcd.waves[0].steps] == [(plan_model.Gate.ETCD_OTHERS_HEALTHY, ("h2", "h3"))]
    assert etcd.waves[1].hosts == ["h1"] and etcd.waves[1].gates[0].target == "etcd-health"


def _etcd_everywhere_changed(inv, desired, stopped=(), unhealthy=()):
    states = converged(inv, desired)
    for n in ("h1", "h2", "h3"):
        f = states[n].facts
        units = dict(f.units)
        if n in stopped:
            units["etcd"] = UnitState("loaded", "failed", "failed", "enabled")
        states[n] = plan_model.HostState(replace(f, units=units, files=dict(
            f.files, **{KEY: FileState("0" * 64, 0o600, "root", "root")})))
    control = replace(control_ok(inv), etcd_unhealthy=tuple(sorted(set(stopped) | set(unhealthy))))
    plan = P.build(inv, desired, states, control)
    return next(p for p in plan.phases if p.name == "etcd")


def _order(etcd):
    out = []
    for w in etcd.waves:
        for s in w.steps:
            out.append(("gate " + ",".join(s.items)) if s.kind == "gate" else f"{s.host} {s.kind}")
    return [x for i, x in enumerate(out) if i == 0 or out[i - 1] != x]


@pytest.mark.parametrize("stopped,unhealthy,want", [
    ((), (), ["gate h2,h3", "h1 put", "h1 restart", "gate h1,h3", "h2 put", "h2 restart",
              "gate h1,h2", "h3 put", "h3 restart"]),
    # a stopped member is started first, without waiting for anything: that can only restore quorum
    (("h3",), (), ["h3 put", "h3 restart", "gate h2,h3", "h1 put", "h1 restart", "gate h1,h3", "h2 put",
                   "h2 restart"]),
    # running but unhealthy: restarted before any healthy member, still without a gate of its own
    ((), ("h2",), ["h2 put", "h2 restart", "gate h2,h3", "h1 put", "h1 restart", "gate h1,h2", "h3 put",
                   "h3 restart"]),
])
def test_etcd_rolling_restart_is_quorum_safe(inv, desired, stopped, unhealthy, want):
    etcd = _etcd_everywhere_changed(inv, desired, stopped, unhealthy)
    assert etcd.rolling and _order(etcd) == want
    for w in etcd.waves:  # every wave that restarts a member is followed by the all-members health gate
        if any(s.kind == "restart" for s in w.steps):
            assert [g.target for g in w.gates] == ["etcd-health"]


def test_fresh_etcd_starts_all_members_in_one_wave(inv, desired):
    states = converged(inv, desired)
    for n in ("h1", "h2", "h3"):
        f = states[n].facts
        units = dict(f.units, etcd=UnitState("loaded", "inactive", "dead", "disabled"))
        files = {p: s for p, s in f.files.items() if not p.startswith("/etc/etcd/")}
        states[n] = plan_model.HostState(replace(f, units=units, files=files))
    plan = P.build(inv, desired, states, control_ok(inv))
    etcd = next(p for p in plan.phases if p.name == "etcd")
    assert not etcd.rolling and len(etcd.waves) == 1
    assert {s.host for s in etcd.waves[0].steps if s.kind == "restart"} == {"h1", "h2", "h3"}
    assert [s.target for s in etcd.waves[0].steps if s.host == "h1" and s.kind == "enable"] == ["etcd"]


def test_missing_package_is_installed_with_dnf_when_no_yum(inv, desired):
    states = converged(inv, desired)
    f = states["h4"].facts
    pk = {p: v for p, v in f.packages.items() if p != "socat"}
    states["h4"] = plan_model.HostState(replace(f, packages=pk, commands=frozenset({"dnf", "systemctl"})))
    plan = P.build(inv, desired, states, control_ok(inv))
    assert acting(plan) == [("h4", "packages", "packages")]
    step = plan.steps[0]
    assert step.items == ("socat",) and "dnf" in step.command and "--enablerepo='k8s-offline*'" in step.command


def test_container_host_skips_os_prep_with_reason(inv, desired):
    states = converged(inv, desired)
    f = states["h5"].facts
    files = {p: s for p, s in f.files.items() if p not in ("/etc/sysctl.d/k8s.conf", "/etc/modules-load.d/k8s.conf")}
    states["h5"] = plan_model.HostState(replace(f, files=files, container="systemd-nspawn", selinux="Enforcing"))
    plan = P.build(inv, desired, states, control_ok(inv))
    skips = {s.target: s.reason for s in plan.steps if s.kind == "skip"}
    assert set(skips) == {"sysctl", "modprobe", "selinux"}
    assert all("container host (systemd-nspawn)" in r for r in skips.values())
    assert ("h5", "restart", "systemd-sysctl") in acting(plan)
    assert not any(s.kind == "command" for s in plan.steps)  # no modprobe, no setenforce


def test_real_host_gets_modprobe_swapoff_and_selinux(inv, desired):
    states = converged(inv, desired)
    f = states["h4"].facts
    states["h4"] = plan_model.HostState(replace(f, swaps=("/dev/sda2",), selinux="Enforcing", kernel_features=frozenset()))
    plan = P.build(inv, desired, states, control_ok(inv))
    cmds = {s.target: s.command for s in plan.steps if s.kind == "command"}
    assert set(cmds) == {"modprobe", "swapoff", "selinux"}
    assert "modprobe br_netfilter" in cmds["modprobe"] and cmds["selinux"].startswith("setenforce 0")


def test_pending_restart_of_an_unfinished_run_is_planned(inv, desired):
    plan = P.build(inv, desired, converged(inv, desired), control_ok(inv), pending={"h4": {"kubelet"}})
    # the unit file itself may have changed in that run: reload before the restart
    assert acting(plan) == [("h4", "daemon-reload", "daemon-reload"), ("h4", "restart", "kubelet")]
    assert "unfinished" in next(s for s in plan.steps if s.kind == "restart").reason
    assert [g.target for g in next(p for p in plan.phases if p.name == "nodes").waves[0].gates] == ["node-ready"]


def test_stopped_unit_is_started(inv, desired):
    states = converged(inv, desired)
    f = states["h3"].facts
    states["h3"] = plan_model.HostState(replace(f, units=dict(f.units, haproxy=UnitState("loaded", "inactive", "dead",
                                                                                  "enabled"))))
    plan = P.build(inv, desired, states, control_ok(inv))
    assert acting(plan) == [("h3", "restart", "haproxy")]


def test_changed_binary_restarts_its_unit(inv, desired):
    states = converged(inv, desired)
    f = states["h4"].facts
    files = dict(f.files, **{"/usr/local/bin/kubelet": FileState("1" * 64, 0o755, "root", "root")})
    states["h4"] = plan_model.HostState(replace(f, files=files))
    plan = P.build(inv, desired, states, control_ok(inv))
    # a running node's kubelet is replaced: drained first, uncordoned once Ready (as in an upgrade)
    assert acting(plan) == [("control", "drain", "h4"), ("h4", "binary", "/usr/local/bin/kubelet"),
                            ("h4", "restart", "kubelet"), ("control", "uncordon", "h4")]


def test_control_side_registry_and_flannel(inv, desired):
    plan = P.build(inv, desired, converged(inv, desired),
                   plan_model.ControlState(images_missing=("kubernetes/pause-amd64:3.1",), images_total=7))
    assert [(s.kind, s.target) for s in plan.steps if s.acts] == [
        ("harbor-project", "kubernetes"), ("seed", "reg.test:5000"), ("flannel-key", "/coreos.com/network/config")]


def test_preflight_problems(inv, desired):
    states = converged(inv, desired)
    f = states["h4"].facts
    states["h4"] = plan_model.HostState(replace(f, arch="aarch64", time_offset=3.5, os_id="ubuntu", os_family="debian",
                                       os_version="22.04", listening=(("0.0.0.0", 10250),),
                                       units=dict(f.units, kubelet=UnitState("loaded", "inactive", "dead", ""))))
    plan = P.build(inv, desired, states, control_ok(inv))
    assert {c.name for c in plan.problems} == {"os", "arch", "clock", "ports"}
    assert all(c.host == "h4" for c in plan.problems)
    assert "10250 (for kubelet)" in next(c.detail for c in plan.problems if c.name == "ports")


def test_add_node_focus_leaves_other_hosts_alone(inv, desired):
    states = converged(inv, desired)
    old_hosts = b"127.0.0.1 localhost\n"
    for n in ("h1", "h2", "h3", "h4"):
        f = states[n].facts
        files = dict(f.files, **{"/etc/hosts": FileState(sha(old_hosts), 0o644, "root", "root")})
        if n == "h1":  # an unrelated pending change on a master must not be applied by add-node
            files["/etc/kubernetes/apiserver"] = FileState("2" * 64, 0o644, "root", "root")
        states[n] = plan_model.HostState(replace(f, files=files), {"/etc/hosts": old_hosts})
    f5 = states["h5"].facts
    states["h5"] = plan_model.HostState(replace(f5, files={}, units={}, packages={}))
    plan = P.build(inv, desired, states, control_ok(inv), focus=["h5"])
    others = [(h, k, t) for h, k, t in acting(plan) if h != "h5"]
    assert others == [(n, "put", "/etc/hosts") for n in ("h1", "h2", "h3", "h4")]
    assert any("h1" in d and "/etc/kubernetes/apiserver" in d for d in plan.deferred)
    assert ("h5", "restart", "kubelet") in acting(plan)


def test_plan_dict_is_json_ready_and_hides_content(inv, desired):
    import json

    states = converged(inv, desired)
    f = states["h1"].facts
    states["h1"] = plan_model.HostState(replace(f, files={}))
    d = P.build(inv, desired, states, control_ok(inv)).to_dict()
    text = json.dumps(d)
    assert "secret" not in text.replace("changed (secret)", "") and d["summary"]["h1"]["files"]


@pytest.mark.parametrize("recorded, problem", [
    (None, None),  # no cluster formed yet
    ({"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.13"}, None),
    ({"h1": "198.18.0.11", "h2": "198.18.0.12"}, "h3 would join"),
    ({"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.13", "h9": "198.18.0.19"}, "h9 would leave"),
    ({"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.99"}, "h3 (198.18.0.99 -> 198.18.0.13) changed"),
])
def test_etcd_membership_changes_are_named(inv, recorded, problem):
    got = preflight.etcd_membership_problem(recorded, inv)
    assert got == problem if problem is None else problem in got


def test_state_records_the_etcd_members(tmp_path):
    from installer.state import StateDir

    st = StateDir(tmp_path).ensure()
    assert st.etcd_members() is None
    st.set_etcd_members({"h1": "198.18.0.11"})
    assert st.etcd_members() == {"h1": "198.18.0.11"}
    (tmp_path / "etcd-members.json").write_text("garbage")  # never read as "none recorded": fails closed
    with pytest.raises(Error) as e:
        st.etcd_members()
    assert "etcd-members.json" in e.value.message and "re-armed" in e.value.hint


# ------------------------------------------------------------------ addons: written, then applied until it succeeds

MANIFEST = f"{plan_rules.ADDONS_DIR}/kube-dns.yaml"


@pytest.fixture(scope="module")
def with_addons(desired):
    d = dict(desired)
    d["h1"] = replace(d["h1"], files={**d["h1"].files, MANIFEST: File(b"kind: List\nitems: []\n")})
    return d


def addon_steps(plan):
    return [(s.host, s.kind, s.target) for s in plan.steps if s.acts and s.host == "h1"]


def test_changed_addon_manifest_is_put_then_applied(inv, with_addons, desired):
    states = converged(inv, desired)  # the host lacks the manifest
    plan = P.build(inv, with_addons, states, control_ok(inv))
    assert addon_steps(plan) == [("h1", "put", MANIFEST), ("h1", "kubectl-apply", plan_rules.ADDONS_DIR)]
    apply_step = plan.steps[-1]
    assert apply_step.command == plan_rules.addons_command("kube-dns") and apply_step.reason == "manifests changed"
    # the DNS manifest (its Service's fixed cluster IP) first, then the whole directory
    assert apply_step.command.index("/kube-dns.yaml") < apply_step.command.rindex(f"apply -f {plan_rules.ADDONS_DIR}/")
    assert [p.name for p in plan.phases if p.waves][-1] == "addons"


def test_unchanged_but_pending_manifests_are_applied_only(inv, with_addons):
    states = converged(inv, with_addons)
    plan = P.build(inv, with_addons, states, control_ok(inv), pending={"h1": {plan_rules.ADDONS_UNIT}})
    assert acting(plan) == [("h1", "kubectl-apply", plan_rules.ADDONS_DIR)]
    assert "not applied yet" in plan.steps[-1].reason


def test_unchanged_and_nothing_pending_plans_nothing(inv, with_addons):
    plan = P.build(inv, with_addons, converged(inv, with_addons), control_ok(inv), pending={"h2": {plan_rules.ADDONS_UNIT}})
    assert plan.empty and acting(plan) == []  # only the first master applies addons


# ------------------------------------------------------------------ executor: the etcd gates name the bad member


@pytest.mark.parametrize("target", [plan_model.Gate.ETCD_OTHERS_HEALTHY, "etcd-health"])
def test_etcd_gate_names_exactly_the_unhealthy_member(monkeypatch, inv, tmp_path, target):
    from types import SimpleNamespace

    import requests

    from contract.errors import Error
    from installer import apply as A
    from installer import checks
    from installer.hosts.connector import Result
    from installer.state import StateDir

    class Conn:
        def run(self, cmd, **kw):
            return Result(0, "etcd: rafthttp: dial tcp: connection refused\n", "")

    polls = []

    def health(inv, pki, session):
        polls.append(1)
        return [checks.Result("etcd health", m.name, m.name != "h3", "healthy" if m.name != "h3" else "refused")
                for m in inv.etcd_members]

    monkeypatch.setattr(checks, "etcd_health", health)
    site = SimpleNamespace(inv=inv, pki=None, state=StateDir(tmp_path).ensure())
    opts = A.Options(connector_for=None, session=requests.Session(), gate_timeout=0.0, sleep=lambda s: None)
    items = ("h2", "h3") if target == plan_model.Gate.ETCD_OTHERS_HEALTHY else ("h1", "h2", "h3")
    gate = plan_model.Step(plan_model.CONTROL, "gate", target, "quorum", items=items, units=("etcd",))
    with pytest.raises(Error) as e:
        A.Executor(site, {n: Conn() for n in ("h1", "h2", "h3")}, opts)._gate(gate)
    assert e.value.message.startswith("h3: "), e.value.message
    assert all(d.startswith("h3 etcd: ") for d in e.value.details), e.value.details
    if target == plan_model.Gate.ETCD_OTHERS_HEALTHY:
        assert "no other member is restarted" in e.value.message and "on h3" in e.value.hint
    # members outside the gate's items do not matter: h1 may be down while h1 itself is the one to restart
    monkeypatch.setattr(checks, "etcd_health", lambda inv, pki, session: [
        checks.Result("etcd health", m.name, m.name != "h1", "x") for m in inv.etcd_members])
    if target == plan_model.Gate.ETCD_OTHERS_HEALTHY:
        assert "healthy" in A.Executor(site, {}, opts)._gate(gate)


@pytest.mark.parametrize("offset,rtt,ok", [(3.5, 0.1, False), (2.8, 5.6, True), (-3.0, 1.0, False),
                                           (2.4, 1.0, True), (1.9, None, True)])
def test_clock_skew_counts_the_measurements_uncertainty(inv, desired, offset, rtt, ok):
    """A loaded control host delays the facts call one way more than the other: the offset estimate is then off by
    up to half the round trip, so only what exceeds the limit by more than that is a skew."""
    states = converged(inv, desired)
    states["h4"] = plan_model.HostState(replace(states["h4"].facts, time_offset=offset, rtt=rtt))
    plan = P.build(inv, desired, states, control_ok(inv))
    assert ("clock" in {c.name for c in plan.problems}) is (not ok)


# ------------------------------------------------------------------ a member whose data is gone rejoins


def _fresh_member(inv, desired, name="h3", data=1):
    from installer import etcd_member

    states = converged(inv, desired)
    for n in ("h1", "h2", "h3"):
        f = states[n].facts
        probes = dict(f.probes, **{etcd_member.PROBE_DATA: 0})
        if n == name:  # re-installed: no data, etcd not running, its files gone
            probes[etcd_member.PROBE_DATA] = data
            units = dict(f.units, etcd=UnitState("loaded", "inactive", "dead", "disabled"))
            files = {p: s for p, s in f.files.items() if not p.startswith("/etc/etcd/")}
            f = replace(f, units=units, files=files)
        states[n] = plan_model.HostState(replace(f, probes=probes))
    return states


def test_a_recorded_member_without_data_rejoins_behind_the_others_gate(inv, desired):
    states = _fresh_member(inv, desired)
    plan = P.build(inv, desired, states, replace(control_ok(inv), etcd_recorded=True))
    etcd = next(p for p in plan.phases if p.name == "etcd")
    assert etcd.rolling
    first, second = etcd.waves[0], etcd.waves[1]
    [gate] = first.steps
    assert gate.target == plan_model.Gate.ETCD_OTHERS_HEALTHY and gate.items == ("h1", "h2")
    assert "rejoins" in gate.reason
    kinds = [(s.kind, s.target) for s in second.steps]
    assert kinds[-2:] == [(plan_model.StepKind.ETCD_JOIN, "etcd cluster"), (plan_model.StepKind.RESTART, "etcd")]
    assert second.steps[-2].line().startswith("rejoin etcd cluster: no etcd data on this member")
    assert all(s.host == "h3" for s in second.steps) and [g.target for g in second.gates] == ["etcd-health"]
    assert [k for k, t in kinds].count(plan_model.StepKind.RESTART) == 1  # started once, after the join


@pytest.mark.parametrize("recorded, data", [(False, 1), (True, 0), (True, 127)])
def test_no_rejoin_when_the_cluster_is_formed_by_this_run_or_the_data_is_there_or_unknown(inv, desired,
                                                                                          recorded, data):
    states = _fresh_member(inv, desired, data=data)
    plan = P.build(inv, desired, states, replace(control_ok(inv), etcd_recorded=recorded))
    steps = [s for p in plan.phases for w in p.waves for s in w.steps]
    assert not any(s.kind is plan_model.StepKind.ETCD_JOIN for s in steps)


def test_no_rejoin_when_no_other_member_runs_and_one_at_a_time(inv, desired):
    from installer import etcd_member

    states = _fresh_member(inv, desired)
    for n in ("h1", "h2"):  # nobody to join: restoring a snapshot is the way then
        f = states[n].facts
        states[n] = plan_model.HostState(replace(f, units=dict(f.units, etcd=UnitState("loaded", "failed", "dead",
                                                                                          "enabled"))))
    assert etcd_member.joiners(inv, states, replace(control_ok(inv), etcd_recorded=True)) == {}
    states = _fresh_member(inv, desired)
    f = states["h2"].facts
    states["h2"] = plan_model.HostState(replace(f, probes=dict(f.probes, **{etcd_member.PROBE_DATA: 1}),
                                                units=dict(f.units, etcd=UnitState("loaded", "inactive", "dead",
                                                                                   "disabled"))))
    assert list(etcd_member.joiners(inv, states, replace(control_ok(inv), etcd_recorded=True))) == ["h2"]  # one per run


def test_nodes_whose_kubelet_is_replaced_go_one_at_a_time_each_behind_its_ready_gate(inv, desired):
    """An upgrade replaces kubelet on running nodes: h4, then h5, each waited for; the executor stops at the
    first node that does not come back, with the ones after it untouched."""
    d = dict(desired)
    for n in ("h4", "h5"):
        bins = {"/usr/local/bin/kubelet": plan_model.Source(sha(b"kubelet 1.10.4"), "k.tar.gz!kubelet")}
        d[n] = replace(desired[n], binaries=bins)
    plan = P.build(inv, d, converged(inv, desired), control_ok(inv))
    nodes = next(p for p in plan.phases if p.name == "nodes")
    assert nodes.rolling
    assert [([(s.host, s.kind, s.target) for s in w.steps if s.host == "control"] or sorted({s.host for s in w.steps}),
             [g.items for g in w.gates]) for w in nodes.waves] == [
        ([("control", "drain", "h4")], []), (["h4"], [("h4",)]), ([("control", "uncordon", "h4")], []),
        ([("control", "drain", "h5")], []), (["h5"], [("h5",)]), ([("control", "uncordon", "h5")], [])]
    assert all(any(s.kind == "binary" for s in w.steps) for w in nodes.waves[1::3])


def test_a_node_left_cordoned_by_a_stopped_run_is_uncordoned(inv, desired):
    plan = P.build(inv, desired, converged(inv, desired), replace(control_ok(inv), cordoned=("h5",)))
    nodes = next(p for p in plan.phases if p.name == "nodes")
    assert [(s.host, s.kind, s.target) for w in nodes.waves for s in w.steps] == [("control", "uncordon", "h5")]


def test_new_nodes_and_config_changes_still_go_together(inv, desired):
    states = converged(inv, desired)
    for n in ("h4", "h5"):  # not running yet: a first apply
        f = states[n].facts
        states[n] = plan_model.HostState(replace(f, units=dict(f.units, kubelet=UnitState("loaded", "inactive",
                                                                                          "dead", "disabled")),
                                                 files={p: s for p, s in f.files.items()
                                                        if p != "/usr/local/bin/kubelet"}))
    plan = P.build(inv, desired, states, control_ok(inv))
    nodes = next(p for p in plan.phases if p.name == "nodes")
    assert not nodes.rolling and len(nodes.waves) == 1
    assert [g.items for g in nodes.waves[0].gates] == [("h4", "h5")]


def _stopped(states, names, units):
    """The states with `units` dead on the hosts `names` (and their config files not there yet)."""
    out = dict(states)
    for n in names:
        f = out[n].facts
        out[n] = plan_model.HostState(replace(f, units=dict(f.units, **{u: UnitState("loaded", "inactive", "dead",
                                                                                   "disabled") for u in units})))
    return out


MASTER_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def test_first_install_starts_every_master_and_lb_at_once_then_gates_each(inv, desired):
    states = _stopped(converged(inv, desired), ("h1", "h2", "h3"), MASTER_UNITS + ("haproxy", "keepalived"))
    plan = P.build(inv, desired, states, control_ok(inv))
    masters = next(p for p in plan.phases if p.name == "masters")
    assert not masters.rolling and len(masters.waves) == 1
    (w,) = masters.waves
    assert {s.host for s in w.steps if s.kind == "restart"} == {"h1", "h2", "h3"}
    assert [(g.host, g.target) for g in w.gates] == [(n, plan_model.Gate.APISERVER_HEALTHZ) for n in ("h1", "h2", "h3")]
    lb = next(p for p in plan.phases if p.name == "lb")
    assert not lb.rolling and len(lb.waves) == 1
    (g,) = lb.waves[0].gates  # one VIP gate naming every lb host
    assert g.target is plan_model.Gate.VIP_HEALTHZ and g.items == ("h1", "h2", "h3")
    assert {s.host for s in lb.waves[0].steps if s.kind == "restart"} == {"h1", "h2", "h3"}


def test_masters_and_lb_roll_once_one_of_them_serves(inv, desired):
    # h1 serves (an earlier run started it), h2 and h3 do not yet: the others start one at a time behind gates
    states = _stopped(converged(inv, desired), ("h2", "h3"), MASTER_UNITS + ("haproxy", "keepalived"))
    plan = P.build(inv, desired, states, control_ok(inv))
    for name in ("masters", "lb"):
        phase = next(p for p in plan.phases if p.name == name)
        assert phase.rolling and [w.hosts for w in phase.waves] == [["h2"], ["h3"]], name
        assert all(len(w.gates) == 1 for w in phase.waves)
