"""SSH connector argument logic: per-host user/port/key, host-key policy, command lines (no sshd needed)."""

from __future__ import annotations

from pathlib import Path

from installer.hosts import ssh as sshmod
from installer.hosts.ssh import SshConnector
from installer.inventory import load

ROOT = Path(__file__).resolve().parents[2]


def opts(argv):
    return {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}


def test_base_argv_has_user_port_key_and_batch_mode():
    c = SshConnector("m1", "10.0.0.5", user="deploy", port=2222, key="/k/id", connect_timeout=7,
                     strict_host_keys="yes", known_hosts="/state/known_hosts", options=["Ciphers=aes128-ctr"])
    argv = c.base_argv()
    assert argv[:5] == ["ssh", "-p", "2222", "-l", "deploy"]
    assert argv[argv.index("-i") + 1] == "/k/id"
    o = opts(argv)
    assert {"BatchMode=yes", "ConnectTimeout=7", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes",
            "UserKnownHostsFile=/state/known_hosts", "Ciphers=aes128-ctr"} <= o
    assert any(x.startswith("ControlPath=/tmp/k8s-ssh.") for x in o)
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


def test_host_key_policy_follows_the_client_version(monkeypatch):
    c = SshConnector("m1", "10.0.0.5")
    monkeypatch.setattr(sshmod, "ssh_version", lambda ssh="ssh": (7, 4))  # CentOS 7: no accept-new
    assert "StrictHostKeyChecking=no" in opts(c.base_argv())
    monkeypatch.setattr(sshmod, "ssh_version", lambda ssh="ssh": (9, 2))
    assert "StrictHostKeyChecking=accept-new" in opts(c.base_argv())
    c.close()


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
