"""etcd v3 authentication: the facts probes, what they mean, and when apply plans the step (pure parts)."""

from __future__ import annotations

import subprocess

import pytest

from installer import etcd_auth, etcd_users, facts
from installer.etcd_backup import OnMember
from installer.facts import Facts
from installer.inventory import Host, Inventory

INV = {
    "cluster": {"name": "t", "vip": "198.18.0.100"},
    "registry": {"hostname": "reg.test", "address": "198.18.0.20"},
    "hosts": [{"name": f"m{i}", "address": f"198.18.0.1{i}", "roles": ["master", "etcd", "lb"]} for i in (1, 2, 3)]
    + [{"name": "n1", "address": "198.18.0.21", "roles": ["node"]}],
}
ON = {etcd_auth.PROBE_MEMBER: 1, etcd_auth.PROBE_ADMIN: 0}
OFF = {etcd_auth.PROBE_MEMBER: 0, etcd_auth.PROBE_ADMIN: 0}
DOWN = {etcd_auth.PROBE_MEMBER: 1, etcd_auth.PROBE_ADMIN: 1}
NO_ADMIN = {etcd_auth.PROBE_MEMBER: 127, etcd_auth.PROBE_ADMIN: 127}


@pytest.fixture
def inv():
    return Inventory.model_validate(INV)


def f(probes) -> Facts:
    return Facts(host="x", hostname="x", os_id="centos", os_version="7", os_family="redhat", os_name="CentOS 7",
                 arch="x86_64", kernel="3.10", probes=probes)


@pytest.mark.parametrize("probes, want", [(ON, True), (OFF, False), (DOWN, None), (NO_ADMIN, None), ({}, None),
                                          ({etcd_auth.PROBE_ADMIN: 0}, None)])
def test_state_from_the_two_reads(probes, want):
    assert etcd_auth.state(f(probes)) is want
    assert etcd_auth.state(None) is None


def steps(phase):
    return [(s.host, s.kind, s.target) for w in phase.waves for s in w.steps]


def test_on_somewhere_and_off_nowhere_plans_nothing(inv):
    assert steps(etcd_auth.phase(inv, {"m1": f(ON), "m2": f(DOWN), "m3": f(ON), "n1": f({})})) == []


def test_off_on_any_member_plans_the_step_there(inv):
    phase = etcd_auth.phase(inv, {"m1": f(ON), "m2": f(OFF), "m3": f(DOWN)})
    assert steps(phase) == [("m2", etcd_auth.STEP_KIND, etcd_auth.TARGET)]
    reason = phase.waves[0].steps[0].reason
    assert "off on m2" in reason and all(u in reason for u in etcd_users.USERS)


def test_unknown_everywhere_plans_the_step_on_the_first_member(inv):
    # a first apply (no etcd yet) or a cluster from before the etcd-admin certificate
    assert steps(etcd_auth.phase(inv, {"m1": f(NO_ADMIN), "m2": f(NO_ADMIN), "m3": None})) == [
        ("m1", etcd_auth.STEP_KIND, etcd_auth.TARGET)]


def test_members_outside_the_plan_or_focus_are_left_alone(inv):
    assert steps(etcd_auth.phase(inv, {"n1": f({})})) == []  # no member in this plan
    assert steps(etcd_auth.phase(inv, {"m1": f(OFF)}, in_focus=lambda h: h.name == "n1")) == []


def test_probes_only_on_etcd_hosts_and_their_exit_status_in_the_facts(inv, tmp_path):
    assert etcd_auth.probes(inv.host("n1")) == []
    probes = etcd_auth.probes(inv.host("m1"))
    assert [n for n, _ in probes] == [etcd_auth.PROBE_MEMBER, etcd_auth.PROBE_ADMIN]
    assert "--cert=/etc/etcd/pki/server.crt" in probes[0][1] and "--cert=/etc/etcd/pki/admin.crt" in probes[1][1]
    # no etcdctl or certificate on the host: 127 ("cannot tell"), through the real facts script and parser
    on = OnMember(etcdctl=str(tmp_path / "no-etcdctl"), admin_cert=str(tmp_path / "a.crt"))
    out = subprocess.run(["sh", "-c", facts.script(probes=etcd_auth.probes(inv.host("m1"), on) +
                                                   [("t", "exit 3")])], capture_output=True, text=True).stdout
    got = facts.parse(out, host="m1").probes
    assert got == {etcd_auth.PROBE_MEMBER: 127, etcd_auth.PROBE_ADMIN: 127, "t": 3}


def test_a_probe_name_must_be_one_word():
    with pytest.raises(ValueError):
        facts.script(probes=[("two words", "true")])


def test_the_enable_script_creates_missing_users_grants_root_and_enables(inv):
    text = etcd_auth.enable_script("198.18.0.11")
    assert text.startswith("set -e\n") and text.rstrip().endswith("e auth enable")
    for u in etcd_users.USERS:
        assert f"e user get {u} >/dev/null 2>&1 || e user add \"{u}:$(pw)\" --interactive=false" in text
        assert f"e user grant-role {u} root" in text
    assert "--cert=/etc/etcd/pki/admin.crt" in text and "https://198.18.0.11:2379" in text


def test_no_user_has_the_cn_of_a_certificate_that_lives_outside_the_etcd_hosts_and_masters(inv):
    from installer import pki_specs as pki

    by_name = {s.name: s for s in pki.specs(inv)}
    assert by_name["etcd-client-apiserver"].cn == etcd_users.APISERVER_CN
    assert by_name[etcd_users.ADMIN_CERT].cn == etcd_users.ADMIN_CN
    users = set(etcd_users.USERS)
    for name in ("etcd-client-flanneld", "etcd-healthcheck", *(pki.etcd_name(h) for h in inv.etcd_members)):
        assert by_name[name].cn not in users, name


def test_host_without_etcd_role_gets_no_probe():
    assert etcd_auth.probes(Host(name="x", address="198.18.0.9", roles=("node",))) == []
