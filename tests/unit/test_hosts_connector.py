"""Connector logic: quoting, wrapping, put/get scripts (run for real by the local connector), errors."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time

import pytest

from contract.errors import Error
from installer.hosts.connector import (
    MISSING_RC,
    command_error,
    failures,
    get_script,
    put_script,
    run_on,
    to_shell,
    wrap,
)
from installer.hosts.local import LocalConnector

NASTY = ["plain", "with space", "it's", 'say "hi"', "$HOME", "`id`", "a;b", "*", "back\\slash", "", "-n"]


def sh(line: str) -> str:
    return subprocess.run(["sh", "-c", line], stdout=subprocess.PIPE, check=True, text=True).stdout


@pytest.mark.parametrize("word", NASTY)
def test_list_commands_reach_the_program_word_for_word(word):
    assert sh(to_shell(["printf", "[%s]", word])) == f"[{word}]"


def test_string_commands_are_shell_syntax():
    assert to_shell("echo a | tr a b") == "echo a | tr a b"
    assert sh(wrap("echo a | tr a b")) == "b\n"
    with pytest.raises(ValueError):
        to_shell([])


@pytest.mark.parametrize("cmd", [["printf", "%s|", *NASTY], "printf '%s|' \"it's\" '$HOME'"])
def test_wrap_keeps_the_command_intact_under_sh_c_and_timeout(cmd):
    expected = sh(to_shell(cmd))
    assert sh(wrap(cmd)) == expected
    assert sh(wrap(cmd, timeout=5)) == expected


def test_wrap_layers():
    assert wrap("true") == "sh -c true"
    assert wrap("true", timeout=2.5) == "timeout -k 5 2.500 sh -c true"
    assert wrap("a b", sudo=True, timeout=3) == "sudo -n -- timeout -k 5 3 sh -c 'a b'"
    # the remote login shell sees one word after `sh -c`, whatever the command holds
    assert shlex.split(wrap("echo 'x' \"$y\""))[2] == "echo 'x' \"$y\""


@pytest.mark.parametrize("path", ["relative/x", "/etc/../x", "/etc//x", "/", "/etc/x/", "/a\nb"])
def test_paths_must_be_absolute_and_normalized(path):
    with pytest.raises(Error, match="absolute"):
        put_script(path, 0o644)


def test_put_script_quotes_the_path():
    script = put_script("/etc/it's here/x y.conf", 0o600, "root", "root")
    assert "mkdir -p -- '/etc/it'\"'\"'s here'" in script
    assert "chmod 0600" in script and "chown root:root" in script
    assert get_script("/a b").endswith(f"exit {MISSING_RC}; fi")


@pytest.fixture
def local():
    return LocalConnector("ctl")


def test_local_run_result_and_input(local):
    r = local.run("cat; echo err >&2; exit 4", input=b"in\x00put", check=False)
    assert (r.rc, r.stdout, r.stderr) == (4, "in\x00put", "err\n")
    assert local.run(["printf", "%s|", *NASTY]).stdout == "|".join(NASTY) + "|"


def test_local_put_get_roundtrip_with_awkward_names(local, tmp_path):
    target = tmp_path / "new dir/it's \"q\"" / "$(x) `y`.conf"
    content = bytes(range(256)) * 3
    local.put(str(target), content, 0o640, owner="root", group="root")
    assert target.read_bytes() == content
    st = os.stat(target)
    assert st.st_mode & 0o7777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert local.get(str(target)) == content
    local.put(str(target), b"", 0o600)
    assert local.get(str(target)) == b"" and os.stat(target).st_mode & 0o7777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name], "no temp files left"
    assert local.get(str(tmp_path / "missing")) is None


def test_local_put_failure_keeps_old_file_and_leaves_no_temp(local, tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(Error, match="writing a file"):
        local.put(str(target), b"new", 0o644, owner="no-such-user-k8s", group="root")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_local_get_of_a_directory_is_an_error(local, tmp_path):
    with pytest.raises(Error) as e:
        local.get(str(tmp_path))
    assert "ctl" in e.value.message and "reading a file" in e.value.message


def test_errors_carry_host_command_stderr_tail_and_hint(local):
    with pytest.raises(Error) as e:
        local.run("for i in $(seq 1 40); do echo line$i >&2; done; exit 2")
    err = e.value
    assert err.message.startswith("ctl: command failed with exit status 2")
    assert err.details[-1] == "line40" and len(err.details) == 15
    assert err.hint
    with pytest.raises(Error) as e:
        local.run("no-such-command-k8s")
    assert "missing" in e.value.hint


def test_hints_for_sudo():
    e = command_error("h1", "true", 1, "sudo: a password is required\n", "deploy")
    assert "NOPASSWD" in e.hint and "deploy" in e.hint
    stderr = "deploy is not in the sudoers file.  This incident will be reported.\n"
    e = command_error("h1", "true", 1, stderr, "deploy")
    assert "sudo" in e.hint


def test_local_timeout(local):
    t = time.monotonic()
    with pytest.raises(Error, match="did not finish within 1 s"):
        local.run("sleep 30", timeout=1)
    assert time.monotonic() - t < 5


def test_run_on_bounds_parallelism_and_collects_exceptions():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def fn(h):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        if h == "bad":
            raise Error("bad host")
        return h.upper()

    hosts = ["a", "b", "bad", "c", "d", "e", "f"]
    res = run_on(hosts, fn, max_parallel=3)
    assert list(res) == hosts
    assert res["a"] == "A" and isinstance(res["bad"], Error)
    assert list(failures(res)) == ["bad"]
    assert state["max"] == 3
    assert run_on([], fn) == {}


def test_local_put_file_streams_a_file_without_reading_it_whole(local, tmp_path, monkeypatch):
    src = tmp_path / "kubelet"
    src.write_bytes(os.urandom(3 << 20))
    read_whole = []
    monkeypatch.setattr(type(src), "read_bytes", lambda self: read_whole.append(self) or b"")
    target = tmp_path / "usr/local/bin/kubelet"
    local.put_file(str(target), src, 0o755)
    with open(src, "rb") as f, open(target, "rb") as g:
        assert f.read() == g.read()
    assert os.stat(target).st_mode & 0o7777 == 0o755 and read_whole == []


def test_local_put_file_of_a_missing_file_is_a_clear_error(local, tmp_path):
    with pytest.raises(Error) as e:
        local.put_file(str(tmp_path / "x"), tmp_path / "gone", 0o644)
    assert "cannot read" in e.value.message and str(tmp_path / "gone") in e.value.message
    assert not (tmp_path / "x").exists()
