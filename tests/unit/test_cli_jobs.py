"""`--jobs N` / `-j N`: on every command that handles several hosts at once, its value reaching the use case, its
default sized for the control host, and a bad value refused naming the option (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.errors import Error
from installer import apply as apply_mod
from installer import checks as checks_mod
from installer import cli, egress, etcd_backup
from installer import etcd_restore as er
from installer import pki as pki_mod
from installer.hosts.connector import DEFAULT_PARALLEL, default_parallel

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = str(ROOT / "inventory.example.yaml")
BUNDLE_ARGS = ["-b", "bundle.tar.zst", "--pub", "bundle.pub", "-i", INVENTORY]

COMMANDS = {  # command -> its arguments besides --jobs and --state
    "plan": ["plan", *BUNDLE_ARGS],
    "apply": ["apply", *BUNDLE_ARGS],
    "upgrade": ["upgrade", *BUNDLE_ARGS],
    "add-node": ["add-node", "k8s-node1", *BUNDLE_ARGS],
    "certs renew": ["certs", "renew", *BUNDLE_ARGS],
    "check": ["check", "-i", INVENTORY],
    "etcd restore": ["etcd", "restore", "snap.db", "-i", INVENTORY],
}


def invoke(args):
    return CliRunner().invoke(cli.app, args)


@pytest.fixture
def seen(monkeypatch, tmp_path):
    """The number of hosts at once each use case is given; the use cases themselves are stand-ins."""
    got = {}

    def stop(key, value):
        got[key] = value
        raise Error("stand-in use case reached")

    monkeypatch.setattr(apply_mod, "plan_command", lambda inv, b, pub, root, opts: stop("plan", opts.max_parallel))
    monkeypatch.setattr(apply_mod, "apply_command",
                        lambda inv, b, pub, root, opts, focus=None: stop("apply", opts.max_parallel))
    monkeypatch.setattr(apply_mod, "upgrade_command",
                        lambda inv, b, pub, root, opts: stop("upgrade", opts.max_parallel))

    def run_all(inv, pki, session, connector_for=None, max_parallel=None):
        got["check"] = max_parallel
        return checks_mod.Report()

    monkeypatch.setattr(checks_mod, "run_all", run_all)
    monkeypatch.setattr(egress, "egress_results", lambda inv, root, session: [])
    monkeypatch.setattr(etcd_backup, "require_pki", lambda root: None)
    monkeypatch.setattr(er, "plan", lambda inv, snapshot: [])
    monkeypatch.setattr(er, "plan_lines", lambda inv, snapshot, members: [])

    def restore(inv, pki, snapshot, members, session, connector_for, out, max_parallel=None):
        got["etcd restore"] = max_parallel
        return {"snapshot": str(snapshot)}

    monkeypatch.setattr(er, "restore", restore)
    state = tmp_path / "state"
    ca = pki_mod.Pki(state).crt_path("ca")  # `check` wants the site PKI first
    ca.parent.mkdir(parents=True)
    ca.write_text("stand-in")
    return got, state


def use_case_of(command):
    return "apply" if command in ("apply", "add-node", "certs renew") else command


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_jobs(command):
    r = invoke([*command.split(), "--help"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.replace("│", " ").split())  # rich wraps the help in a box
    assert "--jobs -j N" in text and "An SSH session is I/O bound" in text


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--jobs", "-j"])
def test_the_value_reaches_the_use_case(command, flag, seen):
    got, state = seen
    invoke([*COMMANDS[command], "--state", str(state), flag, "3"])
    assert got == {use_case_of(command): 3}


@pytest.mark.parametrize("command", COMMANDS)
def test_the_default_is_sized_for_this_control_host(command, seen):
    got, state = seen
    invoke([*COMMANDS[command], "--state", str(state)])
    assert got == {use_case_of(command): DEFAULT_PARALLEL}


def test_default_is_4_per_cpu_at_least_4_at_most_32():
    assert [default_parallel(n) for n in (None, 1, 2, 5, 8, 64)] == [4, 4, 8, 20, 32, 32]
    assert apply_mod.Options(connector_for=None, session=None).max_parallel == DEFAULT_PARALLEL


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5"])
def test_a_bad_value_is_refused_naming_the_option(command, value, seen):
    got, state = seen
    r = invoke([*COMMANDS[command], "--state", str(state), f"--jobs={value}"])
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--jobs'" in r.output and "Traceback" not in r.output
    assert got == {}
