"""The membership scripts (member add/remove on the join and the membership-change paths) against a stateful
fake etcdctl that refuses changes the way etcd's strict reconfiguration check does ("unhealthy cluster" until
the member taking the request has been connected to the others for 5 s), loses answers, and fails listings."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest

from installer import etcd_member
from installer import etcd_membership as em
from installer import plan as P
from installer.etcd_backup import OnMember
from installer.plan_model import StepKind
from tests.unit import test_plan as TP
from tests.unit.test_etcd_membership import ADD, REMOVE, STARTED, load

inv, desired = TP.inv, TP.desired  # the planner's fixtures

FAKE = r"""#!/bin/sh
d=@DIR@
echo "$*" >> $d/calls
take() { n=$(cat $d/$1 2>/dev/null || echo 0); [ "$n" -gt 0 ] || return 1; echo $((n - 1)) > $d/$1; }
case "$*" in
  *'member list'*) take list-fails && { echo "Error: context deadline exceeded" >&2; exit 1; }
                   cat $d/listing ;;
  *'member add'*) take refuse && { echo "Error: etcdserver: unhealthy cluster" >&2; exit 1; }
                  peer=${*##*--peer-urls=}; echo "99, unstarted, , $peer, " >> $d/listing
                  take lose && { echo "Error: context deadline exceeded" >&2; exit 1; }
                  echo "Member 99 added to cluster" ;;
  *'member remove'*) take refuse && { echo "Error: etcdserver: unhealthy cluster" >&2; exit 1; }
                     id=${*##* }; grep -v "^$id, " $d/listing > $d/l2 || true; mv $d/l2 $d/listing ;;
esac
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setattr(etcd_member, "RECONFIG_PAUSE", 0.0)
    exe = tmp_path / "etcdctl"
    exe.write_text(FAKE.replace("@DIR@", str(tmp_path)))
    exe.chmod(0o755)
    (tmp_path / "listing").write_text(STARTED)

    def setup(**counts):
        for k, v in counts.items():
            (tmp_path / k.replace("_", "-")).write_text(str(v))
        return OnMember(etcdctl=str(exe))
    return setup


def run(script, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "systemctl").chmod(0o755)
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=20,
                       env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return r, [c.split(" member ", 1)[1] for c in calls if " member " in c]


def test_member_add_is_tried_again_while_etcd_calls_the_cluster_unhealthy(fake, tmp_path):
    r, calls = run(em.add_script(ADD, fake(refuse=2)), tmp_path)
    assert r.returncode == 0 and "added h4" in r.stdout, r
    assert [c for c in calls if c.startswith("add")] == ["add h4 --peer-urls=https://198.18.0.14:2380"] * 3
    assert "99, unstarted, , https://198.18.0.14:2380" in (tmp_path / "listing").read_text()


def test_an_add_whose_answer_was_lost_is_not_repeated(fake, tmp_path):
    r, calls = run(em.add_script(ADD, fake(lose=1)), tmp_path)
    assert r.returncode == 0, r
    assert sum(c.startswith("add") for c in calls) == 1
    assert (tmp_path / "listing").read_text().count("https://198.18.0.14:2380") == 1


def test_it_gives_up_after_the_tries_with_etcds_last_error(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(etcd_member, "RECONFIG_TRIES", 3)
    r, calls = run(em.add_script(ADD, fake(refuse=100)), tmp_path)
    assert r.returncode == 1 and "etcdserver: unhealthy cluster" in r.stderr, r
    assert sum(c.startswith("add") for c in calls) == 3


def test_a_failed_listing_is_not_taken_for_an_empty_one(fake, tmp_path):
    r, calls = run(em.remove_script(REMOVE, fake(list_fails=1)), tmp_path)
    assert r.returncode != 0 and "not a member" not in r.stdout, r
    assert not any(c.startswith("remove") for c in calls)


def test_member_remove_is_tried_again_and_done_once(fake, tmp_path):
    r, calls = run(em.remove_script(REMOVE, fake(refuse=1)), tmp_path)
    assert r.returncode == 0 and "removed h1" in r.stdout, r
    assert [c for c in calls if c.startswith("remove")] == ["remove 1", "remove 1"]
    assert "h1" not in (tmp_path / "listing").read_text()


def test_the_join_replaces_the_old_entry_through_refusals(fake, tmp_path):
    site = load(tmp_path)
    script = etcd_member.join_script(site, site.host("h3"), fake(refuse=2))
    for p in (etcd_member.JOIN_ENV, etcd_member.JOIN_DROPIN):
        script = script.replace(p.rsplit("/", 1)[0], str(tmp_path / p.rsplit("/", 2)[1]))
    r, calls = run(script, tmp_path)
    assert r.returncode == 0, r
    listing = (tmp_path / "listing").read_text()
    assert "3, started, h3" not in listing and "99, unstarted, , https://198.18.0.13:2380" in listing
    assert [c.split()[0] for c in calls if not c.startswith("list")] == ["remove"] * 3 + ["add"]
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in (tmp_path / "k8s-offline" / "etcd-join.env").read_text()


# ------------------------------------------------------------------ a member the cluster removed rejoins


@pytest.mark.parametrize("listed, rejoins", [(None, False), (("h1", "h2", "h3"), False), (("h1", "h2"), True)])
def test_data_of_a_removed_member_is_moved_aside_and_it_rejoins(inv, desired, listed, rejoins):
    """h3 has data, its etcd does not run: it rejoins only when the running cluster's member list (known) has
    no entry with its peer URL, as after a join that stopped after `member remove` and a start by hand."""
    states = TP._fresh_member(inv, desired, data=0)
    peers = None if listed is None else tuple(etcd_member.peer_url(inv.host(n).address) for n in listed)
    control = replace(TP.control_ok(inv), etcd_recorded=True, etcd_peers=peers)
    plan = P.build(inv, desired, states, control)
    joins = [s for p in plan.phases for w in p.waves for s in w.steps if s.kind is StepKind.ETCD_JOIN]
    assert bool(joins) is rejoins
    if rejoins:
        assert joins[0].host == "h3" and "member the cluster removed" in joins[0].reason
        assert f"{etcd_member.RETIRED_DIR}<UTC time>" in joins[0].reason


def test_the_join_moves_the_data_of_the_removed_member_aside(fake, tmp_path):
    site = load(tmp_path)
    (tmp_path / "listing").write_text(STARTED.replace("3, started, h3, https://198.18.0.13:2380, "
                                                      "https://198.18.0.13:2379\n", ""))
    data = tmp_path / "var/lib/etcd"
    (data / "member").mkdir(parents=True)
    script = etcd_member.join_script(site, site.host("h3"), fake()).replace(etcd_member.DATA_DIR, str(data))
    for p in (etcd_member.JOIN_ENV, etcd_member.JOIN_DROPIN):
        script = script.replace(p.rsplit("/", 1)[0], str(tmp_path / p.rsplit("/", 2)[1]))
    r, calls = run(script, tmp_path)
    assert r.returncode == 0 and "the data of its removed member moved to" in r.stdout, r
    moved = [p for p in data.parent.iterdir() if p.name.startswith("etcd.removed-")]
    assert len(moved) == 1 and (moved[0] / "member").is_dir() and not data.exists()
    assert [c.split()[0] for c in calls if not c.startswith("list")] == ["add"]


def test_the_member_list_is_read_over_v2(inv, tmp_path):
    from installer import checks as C
    from installer.pki import Pki
    from tests.unit.test_checks import FakeSession, Resp

    pki = Pki(tmp_path)

    body = {"members": [{"id": "1", "name": "h1", "peerURLs": ["https://198.18.0.11:2380"]},
                        {"id": "9", "name": "", "peerURLs": ["https://198.18.0.13:2380"], "clientURLs": []}]}
    url = "https://{}:2379/v2/members"
    assert C.etcd_peer_urls(inv, pki, FakeSession({url.format("198.18.0.11"): Resp(404, "v2 off"),
                                                   url.format("198.18.0.12"): Resp(200, body)})) == \
        ("https://198.18.0.11:2380", "https://198.18.0.13:2380")
    assert C.etcd_peer_urls(inv, pki, FakeSession({})) is None
