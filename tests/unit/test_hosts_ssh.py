"""SSH connector argument logic: per-host user/port/key, host-key policy, command lines, control sockets.

No sshd here: ssh, ssh-keyscan are fake scripts where a test needs them to run; ssh-keygen is the real one
(local only). tests/integration/test_ssh_host_keys.py runs the same paths against a real sshd.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from contract.errors import Error
from installer import apply as apply_mod
from installer import cli_common
from installer.hosts import control_dir
from installer.hosts import known_hosts as kh
from installer.hosts import ssh as sshmod
from installer.hosts.ssh import SshConnector
from installer.inventory import load

ROOT = Path(__file__).resolve().parents[2]


def opts(argv):
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def host_pub(tmp_path_factory):
    """(public key text "type base64", its SHA256 fingerprint) of a freshly made host key."""
    d = tmp_path_factory.mktemp("hostkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")], check=True)
    pub = " ".join((d / "k.pub").read_text().split()[:2])
    fp = subprocess.run(["ssh-keygen", "-lf", str(d / "k.pub")], capture_output=True, text=True,
                        check=True).stdout.split()[1]
    return pub, fp


def fake_keyscan(tmp_path: Path, pub: str) -> str:
    """An ssh-keyscan that prints pub for the host asked, as the real one names it, and logs its argv."""
    return script(tmp_path / "ssh-keyscan", f"""echo "$@" >> {tmp_path}/keyscan.log
port=22; while [ $# -gt 1 ]; do case "$1" in -p) port=$2; shift 2;; -T) shift 2;; *) shift;; esac; done
if [ "$port" = 22 ]; then name=$1; else name="[$1]:$port"; fi
echo "# $1:$port SSH-2.0-OpenSSH_7.4" >&2
echo "$name {pub}"
""")


# -- argv --------------------------------------------------------------------------------------

def test_base_argv_has_user_port_key_and_batch_mode():
    c = SshConnector("m1", "10.0.0.5", user="deploy", port=2222, key="/k/id", connect_timeout=7,
                     host_keys="strict", known_hosts="/state/known_hosts", options=["Ciphers=aes128-ctr"])
    argv = c.base_argv()
    assert argv[:5] == ["ssh", "-p", "2222", "-l", "deploy"]
    assert argv[argv.index("-i") + 1] == "/k/id"
    o = set(opts(argv))
    assert {"BatchMode=yes", "ConnectTimeout=7", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes",
            "UserKnownHostsFile=/state/known_hosts", "CheckHostIP=no", "Ciphers=aes128-ctr"} <= o
    assert any(x.startswith(f"ControlPath=/tmp/k8s-offline-ssh.{os.geteuid()}/") for x in o)
    assert len(c.control_path) < 100, "Unix socket paths are limited to ~104 bytes"
    assert c.sudo is True, "a non-root user gets sudo by default"
    c.close()


def test_command_argv_sends_one_wrapped_line_through_the_master():
    c = SshConnector("m1", "10.0.0.5")
    argv = c.command_argv("sh -c 'echo a b'")
    assert argv[-3:] == ["10.0.0.5", "--", "sh -c 'echo a b'"]
    assert "ControlMaster=no" in opts(argv) and "-T" in argv
    assert c.sudo is False and "-i" not in argv
    c.close()


@pytest.mark.parametrize("version", [(7, 4), (9, 2)])  # CentOS 7's client has no accept-new
@pytest.mark.parametrize("mode", kh.MODES)
def test_host_keys_are_always_checked_strictly(monkeypatch, version, mode):
    monkeypatch.setattr(sshmod, "ssh_version", lambda ssh="ssh": version)
    c = SshConnector("m1", "10.0.0.5", host_keys=mode, options=["StrictHostKeyChecking=no"])
    o = opts(c.base_argv())
    strict = [x for x in o if x.startswith("StrictHostKeyChecking=")]
    assert strict[0] == "StrictHostKeyChecking=yes", "ssh takes the first value: ours must come first"
    assert "StrictHostKeyChecking=accept-new" not in o
    assert "UserKnownHostsFile=" + os.path.expanduser("~/.ssh/known_hosts") in o, "ssh's own file by default"
    c.close()


def test_unknown_host_key_mode_is_refused():
    with pytest.raises(Error) as e:
        SshConnector("m1", "10.0.0.5", host_keys="no")
    assert "--host-keys" in e.value.hint and e.value.exit_code == 2
    with pytest.raises(Error):
        apply_mod.ssh_connectors("/tmp/kh", host_keys="yes")


def test_cli_connectors_use_the_state_known_hosts_unless_given(tmp_path):
    inv = load(ROOT / "inventory.example.yaml")
    h = inv.hosts[0]
    c = cli_common.connectors(tmp_path / "state", None, "strict")(inv, h)
    assert c.known_hosts == str(tmp_path / "state" / "known_hosts") and c.host_keys.mode == "strict"
    c.close()
    c = cli_common.connectors(tmp_path / "state", tmp_path / "mine", "accept-new")(inv, h)
    assert c.known_hosts == str(tmp_path / "mine") and c.host_keys.mode == "accept-new"
    c.close()


def test_every_connecting_command_has_the_host_keys_option():
    for args in (["plan"], ["apply"], ["add-node"], ["check"], ["certs", "renew"]):
        out = subprocess.run([sys.executable, "-m", "installer.cli", *args, "--help"], capture_output=True,
                             text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"}).stdout
        assert "--host-keys" in out and "--known-hosts" in out, args


def test_for_host_takes_the_inventory_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the key must exist: validation checks it
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("key\n")
    text = (ROOT / "inventory.example.yaml").read_text()
    (tmp_path / "inv.yaml").write_text(text.replace("# key: ~/.ssh/id_rsa", "key: ~/.ssh/id_rsa"))
    inv = load(tmp_path / "inv.yaml")
    h = inv.hosts[0]
    c = SshConnector.for_host(inv, h)
    assert (c.name, c.address, c.user, c.port) == (h.name, h.address, "root", 22)
    assert c.key == str(tmp_path / ".ssh" / "id_rsa")
    assert c.sudo is False
    c.close()


def test_close_without_connecting_is_harmless():
    c = SshConnector("m1", "10.0.0.5")
    c.close()
    c.close()


def test_version_parsing(monkeypatch):
    sshmod.ssh_version.cache_clear()
    assert sshmod.ssh_version("/nonexistent/ssh") == (0, 0)


# -- learning host keys ------------------------------------------------------------------------

@pytest.mark.parametrize("port,name", [(22, "127.0.0.1"), (2222, "[127.0.0.1]:2222")])
def test_first_contact_learns_records_and_prints_the_fingerprint(tmp_path, host_pub, port, name):
    pub, fp = host_pub
    file = tmp_path / "state" / "known_hosts"  # the state directory does not exist yet
    lines = []
    hk = kh.HostKeys(str(file), "accept-new", lines.append, keyscan=fake_keyscan(tmp_path, pub))
    assert hk.prepare("m1", "127.0.0.1", port, 3) is True
    assert file.read_text() == f"{name} {pub}\n"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert len(lines) == 1 and fp in lines[0] and lines[0].startswith("m1: learned ssh host key")
    assert (tmp_path / "keyscan.log").read_text() == f"-p {port} -T 3 127.0.0.1\n"
    # known now: no second scan, nothing printed
    assert hk.prepare("m1", "127.0.0.1", port, 3) is True
    assert (tmp_path / "keyscan.log").read_text().count("\n") == 1 and len(lines) == 1


def test_learning_appends_after_a_last_line_without_newline(tmp_path, host_pub):
    pub, _ = host_pub
    file = tmp_path / "known_hosts"
    file.write_text(f"10.9.9.9 {pub}")
    hk = kh.HostKeys(str(file), keyscan=fake_keyscan(tmp_path, pub))
    hk.learn("m1", "127.0.0.1", 22, 3)
    assert file.read_text() == f"10.9.9.9 {pub}\n127.0.0.1 {pub}\n"
    assert hk.is_known("10.9.9.9", 22) and hk.is_known("127.0.0.1", 22) and not hk.is_known("127.0.0.2", 22)


def test_strict_mode_never_scans(tmp_path, host_pub):
    hk = kh.HostKeys(str(tmp_path / "known_hosts"), "strict", keyscan=fake_keyscan(tmp_path, host_pub[0]))
    assert hk.prepare("m1", "127.0.0.1", 22, 3) is False
    assert not (tmp_path / "keyscan.log").exists() and not (tmp_path / "known_hosts").exists()


def test_no_key_from_the_host_is_an_error(tmp_path):
    hk = kh.HostKeys(str(tmp_path / "kh"), keyscan=script(tmp_path / "ks", "echo 'connect: refused' >&2\n"))
    with pytest.raises(Error) as e:
        hk.prepare("m1", "127.0.0.1", 2222, 3)
    assert "m1: cannot connect over ssh to 127.0.0.1:2222" in e.value.message
    assert "port 2222" in e.value.hint and e.value.details == ["connect: refused"]
    assert not (tmp_path / "kh").exists()


def test_a_file_that_keeps_nothing_is_an_error(tmp_path, host_pub):
    hk = kh.HostKeys("/dev/null", keyscan=fake_keyscan(tmp_path, host_pub[0]))
    with pytest.raises(Error) as e:
        hk.prepare("m1", "127.0.0.1", 22, 3)
    assert "not a regular file" in e.value.message and "/dev/null" in e.value.hint


# -- refused keys ------------------------------------------------------------------------------

REFUSED_STDERR = ("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
                  "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n"
                  "Host key verification failed.\n")


def fake_ssh(tmp_path: Path, stderr: str) -> str:
    """An ssh that fails like the real one does (exit 255) without any network."""
    (tmp_path / "err").write_text(stderr)
    return script(tmp_path / "ssh", f"echo \"$@\" >> {tmp_path}/ssh.log; cat {tmp_path}/err >&2; exit 255\n")


def test_a_changed_key_is_refused_with_how_to_verify_and_remove(tmp_path, host_pub):
    file = tmp_path / "known_hosts"
    file.write_text(f"[127.0.0.1]:2222 {host_pub[0]}\n")
    c = SshConnector("m1", "127.0.0.1", port=2222, known_hosts=str(file), ssh=fake_ssh(tmp_path, REFUSED_STDERR))
    with pytest.raises(kh.HostKeyError) as e:
        c.connect()
    err = e.value
    assert err.reason == kh.CHANGED
    assert "m1" in err.message and "127.0.0.1:2222" in err.message and "CHANGED" in err.message
    assert err.context == "connecting to m1 over ssh" and "Host key verification failed." in err.details
    assert f"ssh-keygen -R '[127.0.0.1]:2222' -f {file}" in err.hint and "ssh-keyscan -p 2222" in err.hint
    assert "StrictHostKeyChecking=yes" in (tmp_path / "ssh.log").read_text()
    assert file.read_text() == f"[127.0.0.1]:2222 {host_pub[0]}\n", "the recorded key is left alone"
    c.close()


def test_strict_mode_refuses_an_unknown_host(tmp_path):
    stderr = ("No ED25519 host key is known for 127.0.0.1 and you have requested strict checking.\n"
              "Host key verification failed.\n")
    c = SshConnector("m1", "127.0.0.1", known_hosts=str(tmp_path / "kh"), host_keys="strict",
                     ssh=fake_ssh(tmp_path, stderr))
    with pytest.raises(kh.HostKeyError) as e:
        c.connect()
    assert e.value.reason == kh.UNKNOWN and "not in" in e.value.message and "127.0.0.1:22" in e.value.message
    assert "--host-keys accept-new" in e.value.hint and "ssh-keyscan -p 22 127.0.0.1" in e.value.hint
    c.close()


def test_other_ssh_failures_are_not_host_key_errors(tmp_path, host_pub):
    file = tmp_path / "known_hosts"
    file.write_text(f"127.0.0.1 {host_pub[0]}\n")
    c = SshConnector("m1", "127.0.0.1", known_hosts=str(file),
                     ssh=fake_ssh(tmp_path, "ssh: connect to host 127.0.0.1 port 22: Connection refused\n"))
    with pytest.raises(Error) as e:
        c.connect()
    assert not isinstance(e.value, kh.HostKeyError) and "firewall" in e.value.hint
    c.close()
    assert kh.host_key_refused(255, REFUSED_STDERR) and not kh.host_key_refused(1, REFUSED_STDERR)


# -- control sockets ---------------------------------------------------------------------------

def test_socket_paths_are_short_unique_and_in_a_run_directory_named_after_its_owner(tmp_path):
    a, b = control_dir.socket_path(str(tmp_path)), control_dir.socket_path(str(tmp_path))
    assert a != b and os.path.dirname(a) == os.path.dirname(b)
    run = os.path.basename(os.path.dirname(a))
    assert run == f"{os.getpid()}.{control_dir.start_time(os.getpid())}" and control_dir.owner_alive(run)
    base = Path(control_dir.base_dir(str(tmp_path)))
    assert stat.S_IMODE(base.stat().st_mode) == 0o700 and stat.S_IMODE(os.stat(os.path.dirname(a)).st_mode) == 0o700
    assert len(control_dir.socket_path()) < 100
    control_dir.remove_own()
    assert list(base.iterdir()) == []


def test_sweep_stops_masters_of_dead_owners_and_removes_their_directories(tmp_path):
    base = Path(control_dir.base_dir(str(tmp_path)))
    base.mkdir(mode=0o700)
    own = control_dir.socket_path(str(tmp_path))
    dead = base / "999999999.12345"  # no such PID
    recycled = base / f"{os.getpid()}.1"  # our PID, but not our start time: a recycled PID
    for d in (dead, recycled):
        d.mkdir()
        (d / "note").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(dead / "s1"))
    ssh = script(tmp_path / "ssh", f"echo \"$@\" >> {tmp_path}/ssh.log\n")
    removed = control_dir.sweep(str(tmp_path), ssh)
    sock.close()
    assert sorted(removed) == sorted([str(dead), str(recycled)])
    assert not dead.exists() and not recycled.exists() and os.path.isdir(os.path.dirname(own))
    assert (tmp_path / "ssh.log").read_text() == f"-o ControlPath={dead / 's1'} -O exit k8s-offline-stale-master\n"
    control_dir.remove_own()


def test_a_base_directory_others_can_use_is_refused(tmp_path):
    base = Path(control_dir.base_dir(str(tmp_path)))
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    with pytest.raises(Error) as e:
        control_dir.socket_path(str(tmp_path))
    assert str(base) in e.value.message and f"remove {base}" in e.value.hint
    base.chmod(0o700)
    assert control_dir.socket_path(str(tmp_path)).startswith(str(base))
    control_dir.remove_own()


def test_a_key_that_did_not_reach_the_file_is_an_error(tmp_path, host_pub, monkeypatch):
    hk = kh.HostKeys(str(tmp_path / "kh"), keyscan=fake_keyscan(tmp_path, host_pub[0]))
    monkeypatch.setattr(hk, "_append", lambda text, what: None)  # a write that got lost
    with pytest.raises(Error) as e:
        hk.prepare("m1", "127.0.0.1", 22, 3)
    assert "not recorded" in e.value.message


def test_a_bad_host_key_mode_on_the_command_line_exits_2_without_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "installer.cli", "plan", "-b", str(tmp_path / "b"), "--pub",
                        str(tmp_path / "p"), "-i", str(ROOT / "inventory.example.yaml"), "--state",
                        str(tmp_path / "state"), "--host-keys", "no"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "unknown host key mode 'no'" in p.stderr and "Traceback" not in p.stderr
    assert "accept-new, strict" in p.stderr
