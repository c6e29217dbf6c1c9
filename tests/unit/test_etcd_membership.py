"""etcd membership from the inventory: the pure planner (facts in, steps out), the scripts against a fake
etcdctl, the record and the retire step."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
from dataclasses import replace
from types import SimpleNamespace

import pytest
import yaml

from contract.errors import Error
from installer import etcd_backup, etcd_member, plan_model, plan_rules
from installer import etcd_membership as em
from installer import inventory as inventory_mod
from installer import plan as P
from installer.etcd_backup import OnMember
from installer.facts import Facts, FileState, UnitState
from installer.plan_model import Gate, StepKind
from installer.render import File, flannel_network_config, render_all
from installer.state import StateDir
from tests.unit.test_plan import AUTH_ON, INV, KEY

ADDR = {f"h{i}": f"198.18.0.1{i}" for i in range(1, 6)}
THREE = {n: ADDR[n] for n in ("h1", "h2", "h3")}
CONF = "/etc/etcd/etcd.conf"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def load(tmp_path, etcd=("h1", "h2", "h3"), name="inv"):
    doc = copy.deepcopy(INV)
    for h in doc["hosts"]:
        roles = [r for r in h["roles"] if r != "etcd"]
        h["roles"] = roles + (["etcd"] if h["name"] in etcd else [])
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return inventory_mod.load(p)


def desired_of(inv):
    pki = {h.name: ({KEY: File(b"-----BEGIN KEY-----\nsecret\n", 0o600)} if h.has("etcd") else {}) for h in inv.hosts}
    rendered = render_all(inv, pki_files=pki)
    out = {}
    for h in inv.hosts:
        bins = {"/usr/local/bin/etcd": plan_model.Source(sha(b"etcd"), "etcd.tar.gz!etcd")} if h.has("etcd") else {}
        out[h.name] = plan_model.HostDesired(files=rendered[h.name], binaries=bins,
                                             packages=plan_rules.wanted_packages(h), units=plan_rules.wanted_units(h))
    return out


def facts_for(name, d, running=True, data=0, files=None):
    fs = {p: FileState(sha(f.content), f.mode, f.owner, "root") for p, f in d.files.items()} if files is None else files
    fs.update({p: FileState(s.sha256, s.mode, "root", "root") for p, s in d.binaries.items()} if files is None else {})
    units = {u: UnitState("loaded", "active", "running", "enabled") for u in d.units}
    if "etcd" in d.units and not running:
        units["etcd"] = UnitState("loaded", "inactive", "dead", "disabled")
    return Facts(host=name, hostname=name, os_id="centos", os_version="7", os_family="redhat", os_name="CentOS 7",
                 arch="x86_64", kernel="3.10", time_offset=0.05, disk_free_kb={"/": 10 << 20, "/var": 10 << 20},
                 packages={p: "1-1" for p in d.packages}, files=fs, units=units,
                 commands=frozenset({"yum", "systemctl"}), kernel_features=frozenset({"bridge-nf", "overlay"}),
                 probes=dict(AUTH_ON, **({etcd_member.PROBE_DATA: data} if "etcd" in d.units else {})))


def states_for(inv, desired, old_desired=None, newcomer=None, **kw):
    """Converged hosts (on the files of old_desired when given: the state before the inventory edit); the
    newcomer has nothing of etcd yet: no files, not running, no data."""
    out = {}
    for h in inv.hosts:
        d = desired[h.name]
        base = old_desired[h.name] if old_desired else d
        if h.name == newcomer:
            f = facts_for(h.name, d, running=False, data=1, files={})
            out[h.name] = plan_model.HostState(f)
            continue
        f = facts_for(h.name, d, **kw.get(h.name, {}))
        files = dict(f.files)
        contents = {}
        for p, want in d.files.items():
            have = base.files.get(p)
            if have is not None and have.content != want.content:
                files[p] = FileState(sha(have.content), have.mode, have.owner, "root")
                contents[p] = have.content
        out[h.name] = plan_model.HostState(replace(f, files=files), contents)
    return out


def control(inv, recorded, unhealthy=()):
    return plan_model.ControlState(images_missing=(), images_total=7, flannel_config=flannel_network_config(inv),
                                   etcd_unhealthy=tuple(unhealthy), etcd_recorded=True,
                                   etcd_members=tuple(recorded.items()))


def phase(plan, name=em.PHASE):
    return next(p for p in plan.phases if p.name == name)


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """One inventory edit: h1 leaves the etcd group (stays a master), h4 (a node) joins it."""
    tmp = tmp_path_factory.mktemp("moved")
    old, new = load(tmp, name="old"), load(tmp, ("h2", "h3", "h4"), name="new")
    return old, new, desired_of(old), desired_of(new)


def test_a_host_added_to_the_etcd_group_joins_behind_the_gates_and_the_leave_waits(moved):
    old, inv, d_old, d = moved
    states = states_for(inv, d, d_old, newcomer="h4")
    plan = P.build(inv, d, states, control(inv, THREE))
    ph = phase(plan)
    assert ph.rolling
    [gate] = ph.waves[0].steps
    assert gate.target is Gate.ETCD_MEMBERS_HEALTHY and gate.items == ("h1", "h2", "h3")
    prepared = [(s.kind, s.target) for s in ph.waves[1].steps]
    assert {s.host for s in ph.waves[1].steps} == {"h4"}
    assert (StepKind.PUT, CONF) in prepared and (StepKind.BINARY, "/usr/local/bin/etcd") in prepared
    assert (StepKind.PUT, KEY) in prepared and (StepKind.ENABLE, "etcd") in prepared
    assert not any(k is StepKind.RESTART for k, _ in prepared)  # nothing starts before member add
    [add] = ph.waves[2].steps
    assert (add.host, add.kind, add.target) == ("h2", StepKind.ETCD_MEMBER_ADD, "h4")
    assert "member add h4 --peer-urls=https://198.18.0.14:2380" in add.line()
    [rec] = ph.waves[3].steps
    assert rec.kind is StepKind.ETCD_MEMBERS_RECORD and rec.items == tuple(f"h{i}={ADDR[f'h{i}']}" for i in range(1, 5))
    assert [(s.host, s.kind) for s in ph.waves[4].steps] == [("h4", StepKind.ETCD_JOIN), ("h4", StepKind.RESTART)]
    assert [(g.target, g.items) for g in ph.waves[4].gates] == [(Gate.ETCD_HEALTH, ("h1", "h2", "h3", "h4"))]
    # the regular etcd phase neither starts h4 nor waits for it; h2 and h3 get the new etcd.conf unrestarted
    etcd = phase(plan, "etcd")
    assert all(s.host != "h4" for s in etcd.steps)
    assert sorted((s.host, s.kind, s.target) for s in etcd.steps if s.acts) == [
        ("h2", StepKind.PUT, CONF), ("h3", StepKind.PUT, CONF)]
    assert all(s.units == () and "not restarted" in s.reason for s in etcd.steps if s.acts)
    assert plan.deferred == ("etcd membership: h1 leaves by the next apply (one member changes per run; "
                             "this one: h4 joins)",)
    # consumers: the masters roll with the new --etcd-servers, flanneld everywhere gets the new endpoints
    servers = "https://198.18.0.12:2379,https://198.18.0.13:2379,https://198.18.0.14:2379"
    assert servers in d["h1"].files["/etc/kubernetes/apiserver"].content.decode()
    masters = phase(plan, "masters")
    assert masters.rolling and [w.hosts for w in masters.waves] == [["h1"], ["h2"], ["h3"]]
    assert servers in d["h5"].files["/etc/sysconfig/flanneld"].content.decode()
    assert {s.host for s in phase(plan, "flannel").steps if s.kind is StepKind.RESTART} == {f"h{i}" for i in range(1, 6)}
    assert "h4" in etcd_backup.changes_etcd_or_masters(plan, inv)  # so apply takes a snapshot first
    assert "etcd member add h4" in plan.text()


def test_the_next_apply_removes_the_leaving_member_and_retires_its_host(moved):
    _old, inv, _d_old, d = moved
    recorded = dict(THREE, h4=ADDR["h4"])
    plan = P.build(inv, d, states_for(inv, d), control(inv, recorded))
    ph = phase(plan)
    assert [[(s.host, s.kind, s.target) for s in w.steps] for w in ph.waves] == [
        [("control", StepKind.GATE, Gate.ETCD_MEMBERS_HEALTHY)],
        [("h2", StepKind.ETCD_MEMBER_REMOVE, "h1")],
        [("h1", StepKind.ETCD_MEMBER_RETIRE, "etcd")],
        [("control", StepKind.ETCD_MEMBERS_RECORD, "etcd-members.json")]]
    assert ph.waves[0].steps[0].items == ("h2", "h3", "h4")
    assert ph.waves[3].steps[0].items == ("h2=198.18.0.12", "h3=198.18.0.13", "h4=198.18.0.14")
    assert [(g.target, g.items) for g in ph.waves[3].gates] == [(Gate.ETCD_HEALTH, ("h2", "h3", "h4"))]
    assert plan.deferred == () and plan.empty is False
    assert etcd_backup.changes_etcd_or_masters(plan, inv) == ["h2", "h1"]  # a snapshot first
    # the etcd phase's gates count h1 while it is still a member
    assert em.cluster_names(inv, em.decide(inv, {}, control(inv, recorded)), recorded) == ("h2", "h3", "h4", "h1")
    again = P.build(inv, d, states_for(inv, d), control(inv, {n: ADDR[n] for n in ("h2", "h3", "h4")}))
    assert again.empty  # converged: the record is the inventory's group


def test_a_member_leaving_the_inventory_entirely_is_removed_too(tmp_path):
    inv = load(tmp_path)
    d = desired_of(inv)
    recorded = dict(THREE, h9="198.18.0.19")
    plan = P.build(inv, d, states_for(inv, d), control(inv, recorded, unhealthy=("h9",)))
    steps = [(s.host, s.kind, s.target) for s in phase(plan).steps if s.acts]
    assert steps == [("h1", StepKind.ETCD_MEMBER_REMOVE, "h9"), ("h9", StepKind.ETCD_MEMBER_RETIRE, "etcd"),
                     ("control", StepKind.ETCD_MEMBERS_RECORD, "etcd-members.json")]


def test_two_joins_make_one_change_per_run(tmp_path):
    inv = load(tmp_path, ("h1", "h2", "h3", "h4", "h5"))
    d = desired_of(inv)
    states = states_for(inv, d, newcomer="h4")
    states["h5"] = plan_model.HostState(facts_for("h5", d["h5"], running=False, data=1, files={}))
    plan = P.build(inv, d, states, control(inv, THREE))
    adds = [s.target for s in phase(plan).steps if s.kind is StepKind.ETCD_MEMBER_ADD]
    assert adds == ["h4"] and plan.deferred == ("etcd membership: h5 joins by the next apply (one member changes "
                                                "per run; this one: h4 joins)",)
    assert all(s.host != "h5" for p in plan.phases if p.name in ("etcd", em.PHASE) for s in p.steps)
    # the checks after that apply count h4 (recorded by then), not h5 (no member yet)
    checked = em.joined(inv, dict(THREE, h4=ADDR["h4"]))
    assert [m.name for m in checked.etcd_members] == ["h1", "h2", "h3", "h4"] and checked.host("h5").roles == ("node",)
    assert em.joined(inv, {n: ADDR[n] for n in ADDR}) is inv


def test_a_dead_leaving_member_is_removed_before_a_join(moved):
    _old, inv, d_old, d = moved
    plan = P.build(inv, d, states_for(inv, d, d_old, newcomer="h4"), control(inv, THREE, unhealthy=("h1", "h4")))
    kinds = [(s.kind, s.target) for s in phase(plan).steps if s.acts]
    assert kinds[0] == (StepKind.ETCD_MEMBER_REMOVE, "h1")
    assert plan.deferred[0].startswith("etcd membership: h4 joins by the next apply")


@pytest.mark.parametrize("etcd, recorded, unhealthy, words", [
    (("h1", "h2", "h3"), dict(THREE, h3="198.18.0.99"), (), "h3 (198.18.0.99 -> 198.18.0.13) changed address"),
    (("h1", "h2", "h3"), ADDR, ("h2",), "h2 not healthy"),  # removing h4 while h2 is sick: quorum
    (("h1", "h2", "h3", "h4", "h5"), THREE, ("h1",), "h1 not healthy"),  # adding while h1 is sick
    (("h4",), {"h1": ADDR["h1"]}, ("h1",), "would leave no member: h1 is the last one"),
])
def test_refusals_say_why_and_how_before_anything_is_done(tmp_path, etcd, recorded, unhealthy, words):
    inv = load(tmp_path, etcd)
    d = desired_of(inv)
    states = states_for(inv, d)  # the sick member runs: this run does not (re)start it
    with pytest.raises(em.MembershipRefused) as e:
        P.build(inv, d, states, control(inv, recorded, unhealthy))
    assert words in e.value.message and "nothing was changed" in e.value.hint, e.value.message
    if "changed address" in words:
        assert e.value.exit_code == 2 and "take it out of the etcd group" in e.value.hint
        assert em.moved_members(recorded, inv) is not None  # apply refuses it before asking any host


def test_an_unhealthy_member_this_run_starts_is_left_to_the_gates(moved):
    _old, inv, d_old, d = moved
    states = states_for(inv, d, d_old, newcomer="h4", h3={"running": False})
    plan = P.build(inv, d, states, control(inv, THREE, unhealthy=("h3", "h4")))
    assert [s.host for s in phase(plan, "etcd").steps if s.kind is StepKind.RESTART] == ["h3"]
    assert phase(plan).waves[0].steps[0].target is Gate.ETCD_MEMBERS_HEALTHY  # checked again once h3 runs


def test_a_newcomer_with_etcd_data_of_its_own_is_refused(moved):
    _old, inv, d_old, d = moved
    states = states_for(inv, d, d_old, newcomer="h4")
    f = states["h4"].facts
    states["h4"] = plan_model.HostState(replace(f, probes=dict(f.probes, **{etcd_member.PROBE_DATA: 0})))
    with pytest.raises(em.MembershipRefused) as e:
        P.build(inv, d, states, control(inv, THREE))
    assert "already has etcd data" in e.value.message and "mv /var/lib/etcd" in e.value.hint


def test_re_runs_after_a_failure_resume_the_change(moved):
    _old, inv, d_old, d = moved
    # stopped after `member add`, before the record: the same plan again (the script keeps the unstarted entry)
    states = states_for(inv, d, d_old, newcomer="h4")
    # (its files were put and etcd enabled by the run that stopped)
    f = facts_for("h4", d["h4"], running=False, data=1)
    states["h4"] = plan_model.HostState(replace(f, units=dict(f.units, etcd=UnitState("loaded", "inactive", "dead",
                                                                                       "enabled"))))
    plan = P.build(inv, d, states, control(inv, THREE))
    assert [s.kind for s in phase(plan).steps if s.acts] == [StepKind.ETCD_MEMBER_ADD, StepKind.ETCD_MEMBERS_RECORD,
                                                             StepKind.ETCD_JOIN, StepKind.RESTART]
    # stopped after the record, before h4 started: h4 is a recorded member without data: it rejoins, with the
    # recorded members as its initial cluster; h1's removal waits for the next run
    recorded = dict(THREE, h4=ADDR["h4"])
    plan = P.build(inv, d, states, control(inv, recorded, unhealthy=("h4",)))
    etcd = phase(plan, "etcd")
    assert [s.kind for s in etcd.steps if s.host == "h4" and s.acts][-2:] == [StepKind.ETCD_JOIN, StepKind.RESTART]
    assert not phase(plan).waves
    assert plan.deferred == ("etcd membership: h1 leaves by the next apply (this run rejoins h4 first: one "
                             "membership change per run)",)
    script = etcd_member.join_script(inv, inv.host("h4"), members=recorded)
    assert "h1=https://198.18.0.11:2380,h2=https://198.18.0.12:2380,h3=https://198.18.0.13:2380," \
           "h4=https://198.18.0.14:2380" in script
    # h4 started, the run stopped before the record: it is not added twice, nor restarted
    states["h4"] = plan_model.HostState(facts_for("h4", d["h4"]))
    plan = P.build(inv, d, states, control(inv, THREE))
    assert [s.kind for s in phase(plan).steps if s.acts] == [StepKind.ETCD_MEMBER_ADD, StepKind.ETCD_MEMBERS_RECORD]


def test_add_node_changes_no_member(moved):
    _old, inv, d_old, d = moved
    with pytest.raises(em.MembershipRefused) as e:
        P.build(inv, d, states_for(inv, d, d_old, newcomer="h4"), control(inv, THREE), focus=["h5"])
    assert "add-node changes no etcd member" in e.value.message and "installer apply" in e.value.hint
    assert "h4 would join; h1 would leave" in e.value.message


def test_only_the_bootstrap_lines_of_etcd_conf_do_not_restart_a_member(moved):
    _old, inv, d_old, d = moved
    states = states_for(inv, d, d_old, newcomer="h4")
    conf = d["h2"].files[CONF].content
    drifted = conf.replace(b'ETCD_NAME="h2"', b'ETCD_NAME="x"')
    f = states["h2"].facts
    states["h2"] = plan_model.HostState(replace(f, files=dict(f.files, **{CONF: FileState(sha(drifted), 0o644,
                                                                                       "root", "root")})),
                                        {CONF: drifted})
    plan = P.build(inv, d, states, control(inv, THREE))
    assert [s.target for s in phase(plan, "etcd").steps if s.host == "h2" and s.kind is StepKind.RESTART] == ["etcd"]
    assert [s.target for s in phase(plan, "etcd").steps if s.host == "h3" and s.kind is StepKind.RESTART] == []


# ------------------------------------------------------------------ the scripts, against a fake etcdctl


def fake_etcdctl(tmp_path, listing: str):
    log = tmp_path / "calls"
    exe = tmp_path / "etcdctl"
    exe.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *'member list'*) cat <<'EOF'\n{listing}EOF\n"
                   ";; esac\n")
    exe.chmod(0o755)
    return OnMember(etcdctl=str(exe)), log


def run_sh(script):
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=20,
                          env={"PATH": os.environ["PATH"]})


STARTED = "".join(f"{i:x}, started, h{i}, https://198.18.0.1{i}:2380, https://198.18.0.1{i}:2379\n" for i in (1, 2, 3))
ADD = em.Change(em.ADD, "h4", ADDR["h4"], tuple(THREE.items()), tuple(dict(THREE, h4=ADDR["h4"]).items()), "h2")
REMOVE = em.Change(em.REMOVE, "h1", ADDR["h1"], tuple(THREE.items()), (("h2", ADDR["h2"]), ("h3", ADDR["h3"])), "h2")


@pytest.mark.parametrize("listing, out, added", [
    (STARTED, "added h4 (https://198.18.0.14:2380)", True),
    (STARTED + "9, unstarted, , https://198.18.0.14:2380, \n", "the unstarted entry with", False),
    (STARTED + "9, started, h4, https://198.18.0.14:2380, https://198.18.0.14:2379\n", "h4 is a member already",
     False),
])
def test_member_add_is_idempotent(tmp_path, listing, out, added):
    on, log = fake_etcdctl(tmp_path, listing)
    r = run_sh(em.add_script(ADD, on))
    assert r.returncode == 0 and out in r.stdout, r
    calls = log.read_text()
    assert ("member add h4 --peer-urls=https://198.18.0.14:2380" in calls) is added
    assert "--endpoints=https://198.18.0.11:2379,https://198.18.0.12:2379,https://198.18.0.13:2379" in calls


def test_member_add_refuses_a_peer_url_of_another_member(tmp_path):
    on, _log = fake_etcdctl(tmp_path, STARTED + "9, started, hx, https://198.18.0.14:2380, x\n")
    r = run_sh(em.add_script(ADD, on))
    assert r.returncode == 3 and "belongs to another member" in r.stderr


@pytest.mark.parametrize("listing, removed", [(STARTED, "1"), (STARTED.split("\n", 1)[1], None)])
def test_member_remove_is_idempotent(tmp_path, listing, removed):
    on, log = fake_etcdctl(tmp_path, listing)
    r = run_sh(em.remove_script(REMOVE, on))
    assert r.returncode == 0, r
    calls = log.read_text()
    assert ("member remove 1" in calls) is (removed is not None)
    assert "removed h1" in r.stdout if removed else "not a member" in r.stdout
    assert "198.18.0.11:2379" not in calls  # only members that stay are asked


# ------------------------------------------------------------------ the record and the retire step


def test_the_record_follows_and_a_host_gone_from_the_inventory_loses_its_etcd_role(tmp_path):
    inv = load(tmp_path)
    st = StateDir(tmp_path / "state").ensure()
    st.set_etcd_members(dict(THREE, h9="198.18.0.19"))
    st.set_hosts({"h9": {"name": "h9", "address": "198.18.0.19", "roles": ["etcd", "node"]}})
    step = plan_model.Step("control", StepKind.ETCD_MEMBERS_RECORD, "etcd-members.json", "follows",
                           items=tuple(f"{n}={a}" for n, a in THREE.items()))
    assert em.record(st, inv, step) == "recorded: h1, h2, h3"
    assert st.etcd_members() == THREE and st.hosts()["h9"]["roles"] == ["node"]


def test_remove_node_refuses_a_member_and_says_how_apply_removes_it(tmp_path):
    from installer import remove_node

    inv = load(tmp_path)
    st = StateDir(tmp_path / "state").ensure()
    st.set_etcd_members(dict(THREE, h9="198.18.0.19"))
    st.set_hosts({"h9": {"name": "h9", "address": "198.18.0.19", "roles": ["node"]}})
    with pytest.raises(Error) as e:  # still a recorded member
        remove_node.plan(inv, st, None, ["h9"], keep_data=False)
    assert "is an etcd member" in e.value.message
    assert "out of the etcd group in the inventory and run `installer apply`" in e.value.hint


def test_apply_refuses_a_moved_member_before_loading_the_site(tmp_path):
    inv_path = tmp_path / "inv.yaml"
    load(tmp_path)  # writes inv.yaml
    state = tmp_path / "state"
    em.refuse_moved_early(inv_path, state)  # no state directory: nothing recorded, nothing refused
    StateDir(state).ensure().set_etcd_members(dict(THREE, h2="198.18.0.42"))
    with pytest.raises(em.MembershipRefused) as e:
        em.refuse_moved_early(inv_path, state)
    assert "h2 (198.18.0.42 -> 198.18.0.12) changed address" in e.value.message and e.value.exit_code == 2
    assert sorted(p.name for p in state.iterdir()) == ["etcd-members.json"]  # no PKI was made


def test_gates_probe_recorded_members_outside_the_inventory(monkeypatch, tmp_path):
    from installer import checks, gates

    inv = load(tmp_path, ("h2", "h3", "h4"))
    st = StateDir(tmp_path / "state").ensure()
    st.set_etcd_members(dict(THREE, h4=ADDR["h4"]))
    asked = []

    def health_of(pki, session, members):
        asked.extend(members.values())
        return [checks.Result("etcd health", n, n != "h1", "healthy" if n != "h1" else "refused")
                for n in members]

    monkeypatch.setattr(checks, "etcd_health_of", health_of)
    site = SimpleNamespace(inv=inv, pki=None, state=st)
    ok, detail = gates._etcd_ok(site, None, ("h1", "h2", "h3"))
    assert not ok and detail == "h1: refused" and ADDR["h1"] in asked
    assert gates._etcd_ok(site, None, ("h2", "h3", "h4")) == (True, "3 healthy")
    ok, detail = gates._etcd_ok(site, None, ("h2", "h7"))
    assert not ok and "h7: not a member" in detail


class Conn:
    def __init__(self, fail_connect=False, rc=0, out="etcd stopped and disabled, its data moved to X\n"):
        self.fail_connect, self.rc, self.out, self.scripts, self.closed = fail_connect, rc, out, [], False

    def connect(self):
        if self.fail_connect:
            raise Error("h9: cannot connect over ssh to root@198.18.0.19:22")

    def run(self, script, **kw):
        from installer.hosts.connector import Result

        self.scripts.append(script)
        return Result(self.rc, self.out, "boom\n")

    def close(self):
        self.closed = True


def test_retire_reaches_a_host_by_its_record_and_skips_one_that_does_not_answer(tmp_path):
    inv = load(tmp_path)
    st = StateDir(tmp_path / "state").ensure()
    st.set_hosts({"h9": {"name": "h9", "address": "198.18.0.19", "roles": ["etcd", "node"]}})
    site = SimpleNamespace(inv=inv, state=st)
    step = plan_model.Step("h9", StepKind.ETCD_MEMBER_RETIRE, "etcd", "gone", command=em.retire_script())
    conn = Conn()
    done, detail = em.retire(site, {}, lambda inv, host: conn if host.address == "198.18.0.19" else None, step)
    assert done and "data moved to" in detail and conn.closed
    assert "systemctl disable --now etcd" in conn.scripts[0] and "mv /var/lib/etcd" in conn.scripts[0]
    done, detail = em.retire(site, {}, lambda inv, host: Conn(fail_connect=True), step)
    assert not done and "did not answer" in detail and "move /var/lib/etcd aside" in detail
    with pytest.raises(Error) as e:  # it answered and failed: that is an error
        em.retire(site, {}, lambda inv, host: Conn(rc=3), step)
    assert "retiring etcd on h9 failed" in e.value.message


def test_retire_script_moves_the_data_aside_once(tmp_path):
    data = tmp_path / "var/lib/etcd"
    (data / "member").mkdir(parents=True)
    script = em.retire_script().replace(etcd_member.DATA_DIR, str(data))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\n[ \"$1\" = is-active ] && exit 3\nexit 0\n")
    (bin_dir / "systemctl").chmod(0o755)
    script = script.replace(etcd_member.JOIN_DROPIN, str(tmp_path / "dropin")).replace(etcd_member.JOIN_ENV,
                                                                                        str(tmp_path / "env"))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=20)
    assert r.returncode == 0 and "its data moved to" in r.stdout, r
    moved = [p for p in (tmp_path / "var/lib").iterdir() if p.name.startswith("etcd.removed-")]
    assert len(moved) == 1 and (moved[0] / "member").is_dir() and not data.exists()
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=20)
    assert r.returncode == 0 and "no data directory" in r.stdout
