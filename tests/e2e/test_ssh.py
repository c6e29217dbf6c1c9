"""The SSH connector and facts against the real sshd of booted hosts (root and the sudo user `tb`)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from contract.errors import Error
from installer import facts
from installer.hosts.connector import failures
from installer.hosts.ssh import SshConnector, run_on

WEIRD = "/tmp/k8s ssh test/it's a \"file\" $(x) `y`.conf"


def connector(tb, n=1, user="root", **kw) -> SshConnector:
    h = tb.host(n)
    return SshConnector(h.name, h.address, user=user, key=str(tb.key_path), known_hosts=known_hosts(tb),
                        connect_timeout=3, **kw)


def known_hosts(tb) -> str:
    """The testbed's own known_hosts (learned on first contact, as the installer does by default)."""
    return str(tb.key_path.parent / "known_hosts")


@pytest.fixture
def root1(testbed):
    c = connector(testbed, 1)
    yield c
    c.close()


@pytest.fixture
def tb1(testbed):
    c = connector(testbed, 1, user="tb")
    yield c
    c.close()


def test_run_captures_output_status_and_errors(root1):
    r = root1.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert root1.run(["printf", "%s|", "a b", "it's", "$HOME"]).stdout == "a b|it's|$HOME|"
    assert root1.run("cat", input="from stdin").stdout == "from stdin"
    assert root1.run("exit 255", check=False).rc == 255, "the command's own 255 is not a dropped connection"
    with pytest.raises(Error) as e:
        root1.run("echo boom >&2; false")
    msg = e.value.render()
    assert "h1" in msg and "exit status 1" in msg and "boom" in msg and "hint:" in msg


def test_many_small_commands_share_one_connection(root1):
    root1.run("true")
    master = root1.master_pid
    t = time.monotonic()
    for i in range(30):
        assert root1.run(f"echo {i}").stdout == f"{i}\n"
    per_cmd = (time.monotonic() - t) / 30
    assert root1.master_pid == master
    print(f"\n{per_cmd * 1000:.1f} ms per command over the ControlMaster connection")
    assert per_cmd < 0.5


def test_put_is_atomic_with_mode_owner_and_parent_dirs(root1):
    content = b"line 1\n\x00binary\xff\n"
    root1.run(["rm", "-rf", "/tmp/k8s ssh test"])
    root1.put(WEIRD, content, 0o640, owner="tb", group="tb")
    assert root1.get(WEIRD) == content
    assert root1.run(["stat", "-c", "%a %U %G", WEIRD]).stdout.split() == ["640", "tb", "tb"]
    root1.put(WEIRD, b"v2", 0o600)  # replace: new content, mode and owner
    assert root1.run(["stat", "-c", "%a %U %G %s", WEIRD]).stdout.split() == ["600", "root", "root", "2"]
    # no temporary files are left next to it
    assert root1.run(["ls", "-A", "/tmp/k8s ssh test"]).stdout.splitlines() == [WEIRD.rsplit("/", 1)[1]]


def test_put_file_streams_a_large_file_with_sudo_too(root1, tb1, tmp_path):
    src = tmp_path / "kube-apiserver"
    src.write_bytes(os.urandom(24 << 20))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    for conn in (root1, tb1):  # tb1 writes through sudo -n
        conn.put_file("/tmp/k8s ssh test/bin/kube-apiserver", src, 0o755)
        out = conn.run(["sha256sum", "/tmp/k8s ssh test/bin/kube-apiserver"]).stdout.split()[0]
        assert out == want
        assert conn.run(["stat", "-c", "%a %U", "/tmp/k8s ssh test/bin/kube-apiserver"]).stdout.split() == \
            ["755", "root"]


def test_get_missing_file_is_none_and_directory_is_an_error(root1):
    assert root1.get("/etc/no such file") is None
    with pytest.raises(Error, match="reading a file"):
        root1.get("/etc")


def test_put_fails_with_host_and_hint(root1):
    with pytest.raises(Error) as e:
        root1.put("/proc/k8s-test", b"x", 0o644)
    assert "h1" in e.value.message and "/proc/k8s-test" in e.value.message


def test_sudo_for_a_non_root_user(tb1):
    assert tb1.sudo is True
    assert tb1.run("id -u").stdout.strip() == "0"
    assert tb1.run("id -u", sudo=False).stdout.strip() == "1000"
    tb1.put("/etc/k8s-test/sudo-written", b"by tb via sudo\n", 0o600)
    assert tb1.run(["stat", "-c", "%a %U", "/etc/k8s-test/sudo-written"]).stdout.split() == ["600", "root"]
    assert tb1.get("/etc/k8s-test/sudo-written") == b"by tb via sudo\n"


def test_sudo_that_needs_a_password_says_so(testbed, root1):
    root1.run("id tbpw >/dev/null 2>&1 || useradd -m -s /bin/bash tbpw; "
              "echo 'tbpw ALL=(ALL) ALL' > /etc/sudoers.d/tbpw; chmod 440 /etc/sudoers.d/tbpw; "
              "install -d -m700 -o tbpw -g tbpw ~tbpw/.ssh; "
              "install -m600 -o tbpw -g tbpw /root/.ssh/authorized_keys ~tbpw/.ssh/")
    c = connector(testbed, 1, user="tbpw")
    try:
        t = time.monotonic()
        with pytest.raises(Error) as e:
            c.run("true")
        assert time.monotonic() - t < 10, "sudo -n fails at once instead of waiting for a password"
        assert "NOPASSWD" in e.value.hint
    finally:
        c.close()


def test_timeout_stops_the_command_on_the_host(root1):
    t = time.monotonic()
    with pytest.raises(Error, match="did not finish within 1 s"):
        root1.run("sleep 77", timeout=1)
    assert time.monotonic() - t < 10
    time.sleep(0.5)
    assert "sleep 77" not in root1.run("ps -eo args").stdout


def test_unreachable_host_error_names_address_and_what_to_check(testbed):
    dead = SshConnector("h9", f"{testbed.net}.99", key=str(testbed.key_path), known_hosts=known_hosts(testbed),
                        connect_timeout=2)
    closed = connector(testbed, 1, port=2222)
    for c in (dead, closed):
        t = time.monotonic()
        with pytest.raises(Error) as e:
            c.run("true")
        assert time.monotonic() - t < 30
        assert c.address in e.value.message and "cannot connect" in e.value.message
        assert "address" in e.value.hint and "port" in e.value.hint
        c.close()


def test_wrong_key_is_reported_as_refused_key(testbed, tmp_path):
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    h = testbed.host(1)
    c = SshConnector(h.name, h.address, key=str(tmp_path / "k"), known_hosts=known_hosts(testbed),
                     connect_timeout=3)
    with pytest.raises(Error) as e:
        c.run("true")
    assert "authorized_keys" in e.value.hint
    c.close()


def test_reconnects_after_the_connection_dropped(root1):
    root1.run("true")
    before = root1.master_pid
    # restart sshd, then kill the sshd process serving this connection (found from our shell up)
    drop = ("p=$$; while [ \"$p\" -gt 1 ] && [ \"$(cat /proc/$p/comm)\" != sshd ]; do "
            "p=$(awk '{print $4}' /proc/$p/stat); done; systemctl restart ssh; kill -9 $p")
    with pytest.raises(Error, match="dropped"):
        root1.run(drop, timeout=20)
    assert root1.run("hostname").stdout.strip() == "h1"
    assert root1.master_pid not in (None, before)


def test_parallel_run_on_three_hosts(testbed):
    conns = [connector(testbed, h.n) for h in testbed.hosts]
    try:
        run_on(conns, lambda c: c.run("true"), max_parallel=3)  # connect first: host keys learned, masters up
        t = time.monotonic()
        results = run_on(conns, lambda c: c.run("sleep 1; hostname").stdout.strip(), max_parallel=3)
        assert time.monotonic() - t < 2.9, "the three hosts ran at the same time"
        assert [results[c] for c in conns] == ["h1", "h2", "h3"]
        results = run_on(conns, lambda c: c.run("test $(hostname) != h2"), max_parallel=2)
        assert list(failures(results)) == [conns[1]]
        assert isinstance(results[conns[1]], Error)
    finally:
        for c in conns:
            c.close()


def test_facts_of_a_booted_host(testbed, root1):
    root1.put("/etc/k8s-facts-test", b"abc", 0o640)
    f = facts.gather(root1, ["/etc/k8s-facts-test", "/etc/none here"], ["ssh.service", "nope.service"])
    assert (f.os_family, f.os_id, f.os_version) == ("debian", "debian", "12")
    assert f.hostname == "h1" and f.arch and f.kernel
    assert f.container == "systemd-nspawn"
    assert f.time_offset is not None and abs(f.time_offset) < 0.5, f.time_offset
    assert 22 in f.ports
    assert f.files["/etc/k8s-facts-test"] == facts.FileState(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 0o640, "root", "root")
    assert f.files["/etc/none here"] is None
    assert f.units["ssh.service"].running and f.units["ssh.service"].exists
    assert not f.units["nope.service"].exists
    assert f.packages is not None  # rpm exists in the testbed rootfs (with an empty database)
    assert f.selinux is None and not f.swap_on
    assert {"systemctl", "rpm", "dnf", "sudo", "ss"} <= f.commands and "getenforce" not in f.commands
    assert f.disk_free_kb["/"] > 0 and f.disk_free_kb["/var"] > 0
