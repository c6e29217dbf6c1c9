"""etcd snapshots with fakes: naming, retention, the sidecar, verification, and when apply takes one."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
import yaml

from contract.errors import Error, ValidationError
from installer import apply as apply_mod
from installer import etcd_backup as B
from installer import inventory as inventory_mod
from installer import plan_model
from installer.checks import Result as CheckResult
from installer.hosts.connector import Result
from installer.pki import Pki

ROOT = Path(__file__).resolve().parents[2]
T = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
DATA = b"bolt database bytes " * 100
MEMBERS = {"header": {"cluster_id": 1}, "members": [
    {"ID": 0xABCDEF0123456789, "name": "k8s-master1", "peerURLs": ["https://192.168.10.11:2380"],
     "clientURLs": ["https://192.168.10.11:2379"]},
    {"ID": 0x1234, "name": "k8s-master2", "peerURLs": ["https://192.168.10.12:2380"], "clientURLs": []}]}


@pytest.fixture
def inv():
    return inventory_mod.load(ROOT / "inventory.example.yaml")


def inv_with(tmp_path, **cluster):
    data = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    data["cluster"].update(cluster)
    (tmp_path / "inv.yaml").write_text(yaml.safe_dump(data))
    return inventory_mod.load(tmp_path / "inv.yaml")


class Member:
    """A fake etcd host: answers the commands fetch runs; `read` is what get returns, `sha` what sha256sum says."""

    name = "k8s-master1"

    def __init__(self, data=DATA, read=None, sha=None, revision=42, fail=None) -> None:
        self.data, self.read = data, data if read is None else read
        self.sha = sha or hashlib.sha256(data).hexdigest()
        self.revision, self.fail = revision, fail
        self.calls, self.removed, self.closed = [], [], False

    def run(self, cmd, *, sudo=None, timeout=None, check=True, input=None):
        words = cmd if isinstance(cmd, list) else cmd.split()
        self.calls.append(words)
        line = " ".join(words)
        if self.fail and self.fail in line:
            raise Error(f"{self.name}: command failed with exit status 1: {line}")
        if words[0] == "mktemp":
            return Result(0, "/var/tmp/k8s-offline-etcd-snapshot.abc123\n", "")
        if words[0] == "rm":
            self.removed.append(words[-1])
            return Result(0, "", "")
        if words[0] == "sha256sum":
            return Result(0, f"{self.sha}  {words[-1]}\n", "")
        if "save" in words:
            return Result(0, f"Snapshot saved at {words[-1]}\n", "")
        if "status" in words:
            return Result(0, json.dumps({"hash": 3735928559, "revision": self.revision, "totalKey": 7,
                                         "totalSize": len(self.data)}) + "\n", "")
        if "member" in words:
            return Result(0, json.dumps(MEMBERS), "")
        raise AssertionError(f"unexpected command {line}")

    def get(self, path):
        assert path == "/var/tmp/k8s-offline-etcd-snapshot.abc123/snapshot.db"
        return self.read

    def close(self):
        self.closed = True


# ------------------------------------------------------------------ naming and retention


def test_name_is_utc_time_and_revision():
    assert B.snapshot_name(T, 42) == "etcd-20240506T070809Z-42.db"
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert B.snapshot_name(dt.datetime(2024, 5, 6, 9, 8, 9, tzinfo=plus2), 7) == "etcd-20240506T070809Z-7.db"
    assert B.NAME_RE.match("etcd-20240506T070809Z-42.db")
    with pytest.raises(ValueError):
        B.snapshot_name(dt.datetime(2024, 5, 6), 1)  # naive: which time zone?


def make(d: Path, *names: str) -> None:
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_text(n)


def test_prune_keeps_the_last_n_and_their_sidecars(tmp_path):
    names = [f"etcd-2024050{i}T000000Z-{10 - i}.db" for i in range(1, 6)]  # revision order is not time order
    make(tmp_path, *names, *(n + ".json" for n in names))
    removed = B.prune(tmp_path, 2)
    assert sorted(p.name for p in removed) == sorted(names[:3] + [n + ".json" for n in names[:3]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:] + [n + ".json" for n in names[3:]])


def test_prune_never_deletes_a_file_it_did_not_write(tmp_path):
    foreign = ["etcd-notes.txt", "etcd-20000101T000000Z-1.db.bak", "backup-20000101T000000Z-1.db",
               ".etcd-20000101T000000Z-1.db.123.tmp", "etcd-2000-01-01-1.db", "etcd-20000101T000000Z-1.json"]
    make(tmp_path, *foreign, "etcd-20240101T000000Z-1.db", "etcd-20240102T000000Z-2.db")
    (tmp_path / "etcd-19990101T000000Z-9.db").mkdir()  # a directory with a matching name is not ours either
    (tmp_path / "etcd-19990102T000000Z-9.db").symlink_to(tmp_path / "etcd-notes.txt")
    assert [p.name for p in B.prune(tmp_path, 1)] == ["etcd-20240101T000000Z-1.db"]
    left = {p.name for p in tmp_path.iterdir()}
    assert set(foreign) <= left and "etcd-20240102T000000Z-2.db" in left
    assert (tmp_path / "etcd-19990101T000000Z-9.db").is_dir() and (tmp_path / "etcd-notes.txt").exists()


def test_prune_keeps_the_new_snapshot_even_when_the_clock_went_back(tmp_path):
    later = [f"etcd-2030010{i}T000000Z-{i}.db" for i in range(1, 4)]
    make(tmp_path, *later, "etcd-20240101T000000Z-9.db")
    removed = B.prune(tmp_path, 2, new=tmp_path / "etcd-20240101T000000Z-9.db")
    assert sorted(p.name for p in removed) == later[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcd-20240101T000000Z-9.db", later[2]]


def test_prune_with_fewer_than_keep_removes_nothing(tmp_path):
    names = [f"etcd-2024010{i}T000000Z-{i}.db" for i in range(1, 4)]
    make(tmp_path, *names)
    assert B.prune(tmp_path, 5, new=tmp_path / names[-1]) == [] and B.prune(tmp_path, 3) == []
    assert B.prune(tmp_path / "missing", 1) == []
    with pytest.raises(ValueError):
        B.prune(tmp_path, 0)


# ------------------------------------------------------------------ fetch, verify, store


def test_take_writes_a_verified_snapshot_and_its_sidecar(tmp_path, inv):
    m = Member()
    snap = B.take(inv, tmp_path, m, inv.host("k8s-master1"), clock=lambda: T.replace(microsecond=123))
    assert snap.path == tmp_path / "backups" / "etcd-20240506T070809Z-42.db"
    assert snap.path.read_bytes() == DATA and stat.S_IMODE(snap.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700
    side = json.loads(snap.sidecar.read_text())
    assert snap.sidecar.name == snap.path.name + ".json" and stat.S_IMODE(snap.sidecar.stat().st_mode) == 0o600
    assert side["sha256"] == hashlib.sha256(DATA).hexdigest() and side["size"] == len(DATA)
    assert side["revision"] == 42 and side["total_keys"] == 7 and side["hash"] == 3735928559
    assert side["member"] == {"name": "k8s-master1", "address": "192.168.10.11"}
    assert side["taken_at"] == "2024-05-06T07:08:09+00:00" and side["file"] == snap.path.name
    assert side["members"][0] == {"id": "abcdef0123456789", "name": "k8s-master1",
                                  "peer_urls": ["https://192.168.10.11:2380"],
                                  "client_urls": ["https://192.168.10.11:2379"]}
    assert m.removed == ["/var/tmp/k8s-offline-etcd-snapshot.abc123"]  # the member's copy is gone
    save = next(c for c in m.calls if "save" in c)
    assert save[:2] == ["sh", "-c"] and save[3:] == ["/usr/local/bin/etcdctl", "snapshot", "save",
                                                     "/var/tmp/k8s-offline-etcd-snapshot.abc123/snapshot.db"]
    script = save[2]  # the etcd-admin credential (root role), the member's own only where it is not there yet
    assert "c=/etc/etcd/pki/admin.crt k=/etc/etcd/pki/admin.key;" in script
    assert "c=/etc/etcd/pki/server.crt k=/etc/etcd/pki/server.key;" in script
    assert "--endpoints=https://192.168.10.11:2379" in script and "--cacert=/etc/etcd/pki/ca.crt" in script
    assert str(snap.path) in snap.line() and "revision 42" in snap.line()
    assert list((tmp_path / "backups").glob(".*")) == []


@pytest.mark.parametrize("member, needle", [
    (Member(read=DATA[:-1]), "differs from the member's"),  # truncated on the way
    (Member(sha="0" * 64), "differs from the member's"),
    (Member(revision=0), "revision 0"),
    (Member(fail="save"), "command failed"),
    (Member(fail="member list"), "command failed"),
])
def test_a_snapshot_that_does_not_verify_writes_nothing_and_cleans_the_member(tmp_path, inv, member, needle):
    with pytest.raises(Error) as e:
        B.take(inv, tmp_path, member, inv.host("k8s-master1"), clock=lambda: T)
    assert needle in e.value.message
    assert not (tmp_path / "backups").exists() or list((tmp_path / "backups").iterdir()) == []
    assert member.removed == ["/var/tmp/k8s-offline-etcd-snapshot.abc123"]


def test_retention_of_take_follows_the_inventory(tmp_path):
    inv = inv_with(tmp_path, etcd_backups_keep=2)
    for i in range(4):
        B.take(inv, tmp_path, Member(revision=10 + i), inv.host("k8s-master1"),
               clock=lambda i=i: T + dt.timedelta(seconds=i))
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [
        "etcd-20240506T070811Z-12.db", "etcd-20240506T070811Z-12.db.json",
        "etcd-20240506T070812Z-13.db", "etcd-20240506T070812Z-13.db.json"]


def test_keep_setting_default_and_validation(tmp_path, inv):
    assert inv.cluster.etcd_backups_keep == 5
    with pytest.raises(ValidationError) as e:
        inv_with(tmp_path, etcd_backups_keep=0)
    assert any(d.startswith("cluster.etcd_backups_keep") for d in e.value.details), e.value.details


# ------------------------------------------------------------------ the decision before changes


def step(host, kind="put", target="/etc/x"):
    return plan_model.Step(host, kind, target, "test")


def a_plan(*steps, gates=()):
    return plan_model.Plan((), (plan_model.Phase("p", (plan_model.Wave(tuple(steps), tuple(gates)),)),))


@pytest.mark.parametrize("steps, gates, want", [
    ([step("k8s-node1"), step("k8s-node2", "restart", "kubelet")], [], []),
    ([step("k8s-node1"), step("k8s-master2", "restart", "kube-apiserver"), step("k8s-master2")], [],
     ["k8s-master2"]),
    ([step("k8s-node1")], [step("k8s-master1", "gate", "etcd-health")], []),  # waiting changes nothing
    ([step("k8s-master1", "skip", "os-prep")], [], []),
    ([step(plan_model.CONTROL, "seed", "registry")], [], []),
    ([step(plan_model.CONTROL, "flannel-key", "/coreos.com/network/config")], [], ["etcd"]),
])
def test_which_plans_change_etcd_or_masters(inv, steps, gates, want):
    assert B.changes_etcd_or_masters(a_plan(*steps, gates=gates), inv) == want


class Health:
    """Stand-in for checks.etcd_health: the members in `healthy` answer."""

    def __init__(self, healthy) -> None:
        self.healthy, self.calls = set(healthy), 0

    def __call__(self, inv, pki, session):
        self.calls += 1
        return [CheckResult("etcd health", m.name, m.name in self.healthy, "x") for m in inv.etcd_members]


@pytest.fixture
def pki_dir(tmp_path):
    p = Pki(tmp_path)
    p.dir.mkdir(parents=True)
    p.crt_path("etcd-healthcheck").write_text("cert")
    return p


def run_before(monkeypatch, inv, pki_dir, plan, healthy, conns):
    health = Health(healthy)
    monkeypatch.setattr(B.checks, "etcd_health", health)
    lines = []
    rec = B.before_changes(inv, pki_dir, pki_dir.state_dir, plan, None, conns.__getitem__, lines.append,
                           clock=lambda: T)
    return rec, lines, health


def test_no_snapshot_when_no_etcd_or_master_host_changes(monkeypatch, inv, pki_dir):
    rec, lines, health = run_before(monkeypatch, inv, pki_dir, a_plan(step("k8s-node1")), ["k8s-master1"], {})
    assert rec is None and lines == [] and health.calls == 0
    assert not (pki_dir.state_dir / "backups").exists()


def test_fresh_cluster_has_nothing_to_back_up(monkeypatch, inv, pki_dir):
    rec, lines, _ = run_before(monkeypatch, inv, pki_dir, a_plan(step("k8s-master1")), [], {})
    assert rec["taken"] is False and rec["changes"] == ["k8s-master1"]
    assert lines == ["etcd snapshot: none taken: no etcd member is healthy yet (a new cluster has nothing to "
                     "back up)"]
    assert not (pki_dir.state_dir / "backups").exists()


def test_running_cluster_gets_a_snapshot_from_the_first_healthy_member(monkeypatch, inv, pki_dir):
    m2 = Member()
    plan = a_plan(step("k8s-node1"), step("k8s-master3", "restart", "kube-apiserver"))
    rec, lines, _ = run_before(monkeypatch, inv, pki_dir, plan, ["k8s-master2", "k8s-master3"], {"k8s-master2": m2})
    assert rec["taken"] and rec["member"] == "k8s-master2" and rec["changes"] == ["k8s-master3"]
    assert Path(rec["path"]).read_bytes() == DATA
    assert len(lines) == 1 and lines[0].startswith(f"etcd snapshot: {rec['path']} (revision 42")
    assert any("--endpoints=https://192.168.10.12:2379" in " ".join(c) for c in m2.calls)
    text = B.evidence_lines(rec)
    assert text == [f"etcd snapshot before changing k8s-master3: {rec['path']} (revision 42, sha256 "
                    f"{hashlib.sha256(DATA).hexdigest()}, from k8s-master2)"]


def test_a_failed_snapshot_stops_before_any_change(monkeypatch, inv, pki_dir):
    with pytest.raises(Error) as e:
        run_before(monkeypatch, inv, pki_dir, a_plan(step("k8s-master1")), ["k8s-master1"],
                   {"k8s-master1": Member(sha="1" * 64)})
    assert e.value.message.startswith("no etcd snapshot before changing k8s-master1:")
    assert "nothing was changed" in e.value.message


def test_evidence_text_says_where_the_snapshot_is():
    report = {"bundle": {"name": "k8s", "version": "1", "manifest_sha256": "m", "signer_fingerprint": "f",
                         "verified": "v", "reused_unpacked": True}, "pki": [], "trust": {}, "seed": None,
              "changed": {"k8s-master1": ["put /etc/x"]}, "nothing_to_do": False, "skipped": [], "deferred": [],
              "checks": None, "seconds": 1.0,
              "etcd_backup": {"taken": True, "path": "/s/backups/etcd-20240506T070809Z-42.db", "revision": 42,
                              "sha256": "ab" * 32, "member": "k8s-master1", "changes": ["k8s-master1"]}}
    text = apply_mod.evidence_text(report)
    assert "etcd snapshot before changing k8s-master1: /s/backups/etcd-20240506T070809Z-42.db" in text
    assert text.index("etcd snapshot") < text.index("k8s-master1: 1 change(s)")
    report["etcd_backup"] = {"taken": False, "reason": "no etcd member is healthy yet"}
    assert "etcd snapshot: none taken: no etcd member is healthy yet" in apply_mod.evidence_text(report)
    report["etcd_backup"] = None
    assert "etcd snapshot" not in apply_mod.evidence_text(report)


def test_snapshot_command_needs_the_pki_and_a_healthy_member(monkeypatch, inv, tmp_path, pki_dir):
    with pytest.raises(Error) as e:
        B.snapshot_command(inv, tmp_path / "elsewhere", None, lambda i, h: Member())
    assert "no etcd-healthcheck certificate" in e.value.message and "--state" in e.value.hint
    monkeypatch.setattr(B.checks, "etcd_health", Health([]))
    with pytest.raises(Error) as e:
        B.snapshot_command(inv, pki_dir.state_dir, None, lambda i, h: Member())
    assert e.value.message.startswith("no etcd member is healthy") and len(e.value.details) == 3
    monkeypatch.setattr(B.checks, "etcd_health", Health(["k8s-master3"]))
    made = []
    snap = B.snapshot_command(inv, pki_dir.state_dir, None, lambda i, h: made.append(Member()) or made[-1],
                              clock=lambda: T)
    assert snap.member == "k8s-master3" and made[0].closed
    assert snap.to_dict()["path"] == str(snap.path) and "sidecar" in snap.text()


def test_apply_takes_it_after_planning_and_before_the_first_change(monkeypatch, inv, tmp_path):
    """The call site in apply_command: snapshot, then the executor; the evidence report names it."""
    from types import SimpleNamespace

    from installer.state import StateDir

    order = []
    bundle = SimpleNamespace(name="k8s", version="1", digest="d" * 64, fingerprint="f", reused=True, dir=tmp_path,
                             components=(), trust=())
    site = SimpleNamespace(inv=inv, pki=Pki(tmp_path), state=StateDir(tmp_path).ensure(), bundle=bundle,
                           pki_report=None)
    plan = a_plan(step("k8s-master1"))
    record = {"taken": True, "path": "/s/backups/etcd-20240506T070809Z-42.db", "revision": 42, "sha256": "ab" * 32,
              "member": "k8s-master1", "changes": ["k8s-master1"]}

    def before(inv_, pki, root, plan_, session, connector, out):
        order.append(("snapshot", plan_ is plan, root == tmp_path))
        return record

    class Executor:
        def __init__(self, *a):
            pass

        def run(self, p):
            order.append(("execute",))
            return apply_mod.Outcome(p)

    monkeypatch.setattr(apply_mod, "load_site", lambda *a, **k: site)
    monkeypatch.setattr(apply_mod, "make_plan", lambda *a, **k: plan)
    monkeypatch.setattr(apply_mod.etcd_backup, "before_changes", before)
    monkeypatch.setattr(apply_mod, "Executor", Executor)
    opts = apply_mod.Options(connector_for=lambda i, h: None, session=None, checks=False)
    report = apply_mod.apply_command(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts)
    assert order == [("snapshot", True, True), ("execute",)]
    assert report["etcd_backup"] == record
    assert json.loads((tmp_path / "report.json").read_text())["etcd_backup"] == record
    assert "etcd snapshot before changing k8s-master1" in (tmp_path / "report.txt").read_text()
    order.clear()  # nothing to do: no snapshot, no executor
    monkeypatch.setattr(apply_mod, "make_plan", lambda *a, **k: plan_model.Plan((), ()))
    report = apply_mod.apply_command(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts)
    assert order == [] and report["etcd_backup"] is None
