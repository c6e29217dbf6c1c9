"""State files fail closed: missing means none; unreadable or invalid is an Error naming the file and the way out."""

import json
import threading

import pytest

from contract.errors import Error
from installer.state import APPLIED, BUNDLE_INFO, ETCD_MEMBERS, JOURNAL, PENDING, StateDir

READERS = {
    ETCD_MEMBERS: (lambda st: st.etcd_members(), None, "membership guard is re-armed from the current inventory"),
    PENDING: (lambda st: st.pending.load(), {}, "pending restarts are forgotten"),
    BUNDLE_INFO: (lambda st: st.bundle_info(), None, "verified and unpacked again"),
    JOURNAL: (lambda st: st.journal.entries(), [], "history of earlier runs is lost"),
    APPLIED: (lambda st: st.applied(), None, "`installer upgrade` refuses until the next successful `installer apply`"),
}


@pytest.fixture
def st(tmp_path):
    return StateDir(tmp_path / "state").ensure()


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_file_means_none(st, name):
    read, empty, _ = READERS[name]
    assert read(st) == empty


@pytest.mark.parametrize("name", sorted(READERS))
def test_unreadable_file_is_an_error_with_the_way_out(st, name):
    read, _, consequence = READERS[name]
    (st.root / name).mkdir()  # reading it fails even as root
    with pytest.raises(Error) as e:
        read(st)
    assert e.value.message.startswith(f"{st.root / name}: cannot read it: ")
    assert e.value.context and e.value.context.startswith("reading ")
    assert f"restore {name} from a backup" in e.value.hint and "remove it on purpose" in e.value.hint
    assert consequence in e.value.hint


@pytest.mark.parametrize("name", [ETCD_MEMBERS, PENDING, BUNDLE_INFO, APPLIED])
@pytest.mark.parametrize("content", ['{"members": {"m1": "10.0.0.1"', "", "\xff\xfe", "[1, 2]", "null"])
def test_invalid_json_is_an_error_not_none(st, name, content):
    read, _, consequence = READERS[name]
    (st.root / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(Error) as e:
        read(st)
    assert e.value.message.startswith(f"{st.root / name}: ") and consequence in e.value.hint
    assert (st.root / name).read_bytes() == content.encode("latin-1")  # left as it was, for the operator


@pytest.mark.parametrize("content", ['{"m1": "10.0.0.1"}', '{"members": ["m1"]}', '{"members": {"m1": 1}}'])
def test_etcd_members_of_the_wrong_shape(st, content):
    (st.root / ETCD_MEMBERS).write_text(content)
    with pytest.raises(Error) as e:
        st.etcd_members()
    assert "expected" in e.value.message and "re-armed" in e.value.hint


@pytest.mark.parametrize("content", ['{"m1": "kubelet"}', '{"m1": [1]}', '{"m1": {"kubelet": true}}'])
def test_pending_of_the_wrong_shape(st, content):
    (st.root / PENDING).write_text(content)
    with pytest.raises(Error) as e:
        st.pending.load()
    assert "expected" in e.value.message and "forgotten" in e.value.hint


def test_a_damaged_pending_file_is_never_overwritten(st):
    (st.root / PENDING).write_text('{"m1": ["kubelet"')
    for change in (lambda: st.pending.add("m1", ["docker"]), lambda: st.pending.done("m1", "kubelet")):
        with pytest.raises(Error):
            change()
    assert (st.root / PENDING).read_text() == '{"m1": ["kubelet"'


def test_round_trips_and_atomic_writes(st):
    st.set_etcd_members({"m1": "10.0.0.1"})
    st.pending.add("m1", ["kubelet", "docker"])
    st.pending.done("m1", "docker")
    st.set_bundle_info({"manifest_sha256": "ab" * 32})
    assert st.etcd_members() == {"m1": "10.0.0.1"}
    assert st.pending.load() == {"m1": {"kubelet"}}
    assert st.bundle_info() == {"manifest_sha256": "ab" * 32}
    assert sorted(p.name for p in st.root.iterdir()) == sorted([ETCD_MEMBERS, PENDING, BUNDLE_INFO])  # no temps


def test_journal_torn_line_is_skipped_and_the_next_entry_starts_a_new_line(st):
    j = st.journal
    j.record("run-start", steps=1)
    with open(j.path, "a") as f:
        f.write('{"event": "step", "ho')  # a killed run's last write
    j2 = StateDir(st.root).journal
    j2.record("run-start", steps=2)
    entries = j2.entries()
    assert [(e["event"], e["steps"]) for e in entries] == [("run-start", 1), ("run-start", 2)]
    assert j2.last_run() == [entries[-1]]


def test_journal_lines_of_parallel_hosts_stay_whole(st):
    j = st.journal
    threads = [threading.Thread(target=lambda i=i: [j.record("step", host=f"h{i}", n=n) for n in range(50)])
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = j.path.read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(x)["event"] == "step" for x in lines)


@pytest.mark.parametrize("content", ['{"kubernetes": "1.10.3"}', '{"bundle": {}, "kubernetes": 1, "hosts": {}}',
                                     '{"bundle": {}, "kubernetes": "1.10.3", "hosts": {"m1": {"etcd": 3}}}'])
def test_applied_record_of_the_wrong_shape(st, content):
    (st.root / APPLIED).write_text(content)
    with pytest.raises(Error) as e:
        st.applied()
    assert "expected" in e.value.message and "`installer upgrade` refuses" in e.value.hint


def test_applied_record_round_trips(st):
    record = {"bundle": {"name": "k8s"}, "kubernetes": "1.10.4", "versions": {"kubernetes": "1.10.4"},
              "hosts": {"m1": {"kubernetes": "1.10.4"}}}
    st.set_applied(record)
    assert st.applied() == record
