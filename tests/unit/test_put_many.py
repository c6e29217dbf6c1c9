"""put_many: many files in one command (a tar stream, each file renamed into place), run for real by the local
connector; and the executor batching a host's consecutive writes into it, journaled step by step."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from contract.errors import Error
from installer import apply as A
from installer import executor
from installer.hosts.connector import PartialWrite, Upload, put_many_script, temp_name, written_count
from installer.hosts.local import LocalConnector
from installer.plan_model import HostDesired, Plan, Source, Step, StepKind
from installer.render import File
from installer.state import StateDir

ROOT_USER = os.geteuid() == 0


def leftovers(d: Path):
    return sorted(str(p) for p in d.rglob("*k8s-offline*"))


@pytest.fixture
def conn():
    return LocalConnector("ctl")


def test_every_file_lands_whole_with_its_mode_and_parents(conn, tmp_path):
    big = tmp_path / "local" / "big"
    big.parent.mkdir()
    data = os.urandom(3 << 20) + b"tail"  # streamed from the file, never read whole
    big.write_bytes(data)
    old = tmp_path / "r" / "etc" / "x.conf"
    old.parent.mkdir(parents=True)
    old.write_text("old\n")
    inode = old.stat().st_ino
    conn.put_many([Upload(str(old), b"new\n", 0o600),
                   Upload(str(tmp_path / "r" / "usr" / "bin" / "big"), big, 0o755),
                   Upload(str(tmp_path / "r" / "deep" / "a" / "b" / "c.txt"), b"", 0o644)])
    assert old.read_text() == "new\n" and old.stat().st_mode & 0o7777 == 0o600
    assert old.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    b = tmp_path / "r" / "usr" / "bin" / "big"
    assert b.read_bytes() == data and b.stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "r" / "deep" / "a" / "b" / "c.txt").read_bytes() == b""
    assert leftovers(tmp_path / "r") == []
    conn.put_many([])  # nothing to write: no command


@pytest.mark.skipif(not ROOT_USER, reason="chown to another user needs root")
def test_a_file_not_roots_is_chowned(conn, tmp_path):
    p = tmp_path / "etcd.conf"
    conn.put_many([Upload(str(p), b"x", 0o640, "nobody", "nogroup"), Upload(str(tmp_path / "r"), b"y", 0o644)])
    import grp
    import pwd

    assert (pwd.getpwuid(p.stat().st_uid).pw_name, grp.getgrgid(p.stat().st_gid).gr_name) == ("nobody", "nogroup")
    assert (tmp_path / "r").stat().st_uid == 0


def test_a_failure_midway_says_how_many_are_in_place_and_leaves_no_temp_file(conn, tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep").write_text("k")
    ups = [Upload(str(tmp_path / "one"), b"1", 0o644), Upload(str(tmp_path / "adir"), b"2", 0o644),
           Upload(str(tmp_path / "three"), b"3", 0o644)]
    with pytest.raises(PartialWrite) as e:
        conn.put_many(ups)
    assert e.value.written == 1 and "(1 of 3 written" in e.value.message and str(tmp_path / "adir") in e.value.message
    assert (tmp_path / "one").read_text() == "1" and not (tmp_path / "three").exists()
    assert (tmp_path / "adir" / "keep").read_text() == "k" and leftovers(tmp_path) == []


def test_an_unreadable_local_file_writes_nothing(conn, tmp_path):
    ups = [Upload(str(tmp_path / "one"), b"1", 0o644), Upload(str(tmp_path / "two"), tmp_path / "missing", 0o755)]
    with pytest.raises(Error) as e:
        conn.put_many(ups)
    assert "cannot read" in e.value.message and str(tmp_path / "missing") in e.value.message
    assert not (tmp_path / "one").exists() and leftovers(tmp_path) == []


def test_the_script_renames_in_order_and_counts_only_a_prefix():
    ups = [Upload("/etc/a b", b"", 0o644), Upload("/etc/it's", b"", 0o600, "etcd", "etcd")]
    script = put_many_script(ups, "n0nce")
    assert temp_name("/etc/a b", "n0nce", 0) == "/etc/.a b.k8s-offline.n0nce0"
    assert script.index("chown etcd:etcd") < script.index("mv -f -T -- '/etc/.a b.k8s-offline.n0nce0'")
    assert script.index("echo written 0") < script.index("echo written 1")
    assert written_count("written 0\nwritten 1\n") == 2 and written_count("written 1\n") == 0
    with pytest.raises(Error):
        put_many_script([Upload("relative", b"", 0o644)], "n")


# -- the executor ---------------------------------------------------------------------------------

class Recorder(LocalConnector):
    """The local connector, counting its commands (each one a round trip on a real host)."""

    def __init__(self):
        super().__init__("h1")
        self.commands = 0

    def _exec(self, line, stdin, timeout, cmd):
        self.commands += 1
        return super()._exec(line, stdin, timeout, cmd)


def plan_for(tmp_path, local):
    root = tmp_path / "host"
    f1, f2 = str(root / "etc" / "a.conf"), str(root / "etc" / "b.conf")
    binary, repo = str(root / "bin" / "kubelet"), [str(root / "repo" / f"p{i}.rpm") for i in range(3)]
    steps = (Step("h1", StepKind.PUT, f1, "new file", file=File(b"a\n", 0o644), units=("kubelet",)),
             Step("h1", StepKind.BINARY, binary, "new binary", source=Source("0" * 64, "kubelet", 0o755),
                  units=("kubelet",)),
             Step("h1", StepKind.REPO, str(root / "repo"), "3 files", items=tuple(repo)),
             Step("h1", StepKind.PUT, f2, "new file", file=File(b"b\n", 0o600)),
             Step("h1", StepKind.DAEMON_RELOAD, "systemd", "units changed"))
    desired = {"h1": HostDesired(files={}, repo={p: Source("0" * 64, f"rpm{i}", 0o644) for i, p in enumerate(repo)})}
    locals_ = {"kubelet": local / "kubelet", **{f"rpm{i}": local / f"p{i}.rpm" for i in range(3)}}
    for name, p in locals_.items():
        p.write_bytes(name.encode() * 1000)
    return steps, desired, locals_, root


def executor_with(tmp_path, conn, desired, locals_):
    site = SimpleNamespace(inv=None, pki=None, registry_access={}, state=StateDir(tmp_path / "state").ensure(),
                           desired=desired, local=locals_)
    opts = A.Options(connector_for=None, session=requests.Session(), gate_timeout=0.0, sleep=lambda s: None)
    ex = A.Executor(site, {"h1": conn}, opts)
    ex.outcome = executor.Outcome(Plan((), ()))
    return ex, site


def test_a_hosts_consecutive_writes_are_one_command_and_journaled_step_by_step(tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    steps, desired, locals_, root = plan_for(tmp_path, local)
    conn = Recorder()
    ex, site = executor_with(tmp_path, conn, desired, locals_)
    monkeypatch.setitem(executor.HANDLERS, StepKind.DAEMON_RELOAD, lambda self, s: executor.StepResult(executor.Status.DONE))
    from installer.plan_model import Wave

    ex._wave("nodes", Wave(steps))
    assert conn.commands == 1  # 1 + 1 + 3 + 1 files in one round trip (daemon-reload stubbed)
    assert (root / "etc" / "a.conf").read_bytes() == b"a\n" and (root / "etc" / "b.conf").stat().st_mode & 0o777 == 0o600
    assert (root / "bin" / "kubelet").read_bytes() == locals_["kubelet"].read_bytes()
    assert all((root / "repo" / f"p{i}.rpm").read_bytes() == locals_[f"rpm{i}"].read_bytes() for i in range(3))
    got = [(e["kind"], e["target"], e["status"], e.get("detail")) for e in site.state.journal.entries()
           if e["event"] == "step"]
    assert got == [("put", steps[0].target, "done", ""), ("binary", steps[1].target, "done", ""),
                   ("repo", steps[2].target, "done", "3 files"), ("put", steps[3].target, "done", ""),
                   ("daemon-reload", "systemd", "done", "")]
    assert site.state.pending.load() == {"h1": {"kubelet"}}  # recorded before the write, as one by one


def test_a_batch_that_fails_midway_journals_what_was_written(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    steps, desired, locals_, root = plan_for(tmp_path, local)
    (root / "repo" / "p1.rpm").mkdir(parents=True)  # a directory where the second repo file goes
    (root / "repo" / "p1.rpm" / "x").write_text("x")
    conn = Recorder()
    ex, site = executor_with(tmp_path, conn, desired, locals_)
    from installer.plan_model import Wave

    with pytest.raises(executor.StepFailed) as e:
        ex._wave("nodes", Wave(steps[:4]))
    assert e.value.message.startswith(f"h1: repo {steps[2].target} failed in phase nodes")
    assert "(3 of 6 written" in e.value.message
    got = [(e["kind"], e["status"]) for e in site.state.journal.entries() if e["event"] == "step"]
    assert got == [("put", "done"), ("binary", "done"), ("repo", "failed")]  # the last put never ran
    assert (root / "bin" / "kubelet").exists() and not (root / "etc" / "b.conf").exists()
    assert leftovers(root) == [] and site.state.pending.load() == {"h1": {"kubelet"}}


def test_a_connector_without_put_many_gets_the_writes_one_by_one(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    steps, desired, locals_, root = plan_for(tmp_path, local)

    class Plain:
        name = "h1"

        def __init__(self):
            self.calls = []

        def put(self, path, content, mode, owner="root", group="root"):
            self.calls.append(("put", path))

        def put_file(self, path, local_, mode, owner="root", group="root"):
            self.calls.append(("put_file", path))

    conn = Plain()
    ex, site = executor_with(tmp_path, conn, desired, locals_)
    from installer.plan_model import Wave

    ex._wave("nodes", Wave(steps[:4]))
    assert [c[0] for c in conn.calls] == ["put", "put_file", "put_file", "put_file", "put_file", "put"]


def test_a_write_onto_a_directory_fails_instead_of_dropping_the_file_into_it(conn, tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(Error):
        conn.put(str(tmp_path / "d"), b"x", 0o644)
    with pytest.raises(PartialWrite) as e:
        conn.put_many([Upload(str(tmp_path / "f"), b"f", 0o644), Upload(str(tmp_path / "d"), b"x", 0o644)])
    assert e.value.written == 1 and (tmp_path / "f").read_bytes() == b"f"
    assert list((tmp_path / "d").iterdir()) == [] and leftovers(tmp_path) == []
