"""The facts parser on captured output: a CentOS 7-looking host, a Debian nspawn host, fallbacks."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from contract.errors import Error
from installer import facts
from installer.facts import FileState, UnitState
from installer.hosts.local import LocalConnector

M = facts.MARK

CENTOS7 = textwrap.dedent(f"""\

    {M} t0
    1700000000.250000000

    {M} os
    NAME="CentOS Linux"
    VERSION="7 (Core)"
    ID="centos"
    ID_LIKE="rhel fedora"
    VERSION_ID="7"
    PRETTY_NAME="CentOS Linux 7 (Core)"
    ANSI_COLOR="0;31"
    CPE_NAME="cpe:/o:centos:centos:7"
    HOME_URL="https://www.centos.org/"
    BUG_REPORT_URL="https://bugs.centos.org/"

    CENTOS_MANTISBT_PROJECT="CentOS-7"
    CENTOS_MANTISBT_PROJECT_VERSION="7"
    REDHAT_SUPPORT_PRODUCT="centos"
    REDHAT_SUPPORT_PRODUCT_VERSION="7"

    {M} arch
    x86_64

    {M} kernel
    3.10.0-1160.el7.x86_64

    {M} hostname
    k8s-master1

    {M} cpus
    4

    {M} meminfo
    MemTotal:        8009180 kB
    SwapTotal:       2097148 kB

    {M} swaps
    Filename\t\t\t\tType\t\tSize\tUsed\tPriority
    /dev/dm-1                               partition\t2097148\t0\t-2

    {M} df
    Filesystem              1024-blocks    Used Available Capacity Mounted on
    /dev/mapper/centos-root    52403200 1934532  50468668       4% /
    /dev/mapper/centos-var     20961280  132432  20828848       1% /var

    {M} ss
    State      Recv-Q Send-Q Local Address:Port               Peer Address:Port
    LISTEN     0      128          *:22                       *:*
    LISTEN     0      100    127.0.0.1:25                       *:*
    LISTEN     0      128       [::]:22                    [::]:*
    LISTEN     0      100      [::1]:25                    [::]:*
    LISTEN     0      128    192.168.10.11:2379             *:*

    {M} rpm
    bash\t4.2.46-34.el7
    docker\t1.13.1-209.git7d71120.el7.centos
    kernel\t3.10.0-1127.el7
    kernel\t3.10.0-1160.el7
    openssh-server\t7.4p1-21.el7

    {M} files
    e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 644 root root
    -
    a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447 600 etcd etcd

    {M} units
    Id=docker.service
    LoadState=loaded
    ActiveState=active
    SubState=running
    UnitFileState=enabled

    Id=etcd.service
    LoadState=not-found
    ActiveState=inactive
    SubState=dead
    UnitFileState=

    Id=firewalld.service
    LoadState=loaded
    ActiveState=failed
    SubState=failed
    UnitFileState=disabled

    {M} virt
    none

    {M} selinux
    Enforcing

    {M} commands
    systemctl
    rpm
    yum
    sudo
    ss
    getenforce
    setenforce
    firewall-cmd

    {M} kernel-features
    bridge-nf
    overlay

    {M} t1
    1700000000.750000000
    """)

FILES = ["/etc/sysctl.d/k8s.conf", "/etc/kubernetes/missing", "/etc/etcd/pki/server.key"]
UNITS = ["docker.service", "etcd", "firewalld.service"]


def test_centos7_host():
    f = facts.parse(CENTOS7, host="m1", managed_files=FILES, units=UNITS, local_start=1699999990.0,
                    local_end=1699999991.0)
    assert (f.host, f.hostname) == ("m1", "k8s-master1")
    assert (f.os_id, f.os_version, f.os_family) == ("centos", "7", "redhat")
    assert f.os_name == "CentOS Linux 7 (Core)"
    assert (f.arch, f.kernel, f.cpus, f.mem_total_kb) == ("x86_64", "3.10.0-1160.el7.x86_64", 4, 8009180)
    assert f.swaps == ("/dev/dm-1",) and f.swap_on
    assert dict(f.disk_free_kb) == {"/": 50468668, "/var": 20828848}
    assert f.listening == (("*", 22), ("127.0.0.1", 25), ("192.168.10.11", 2379), ("::", 22), ("::1", 25))
    assert f.ports == {22, 25, 2379}
    assert f.packages["docker"] == "1.13.1-209.git7d71120.el7.centos"
    assert f.packages["kernel"] == "3.10.0-1160.el7"
    assert f.files["/etc/sysctl.d/k8s.conf"] == FileState(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0o644, "root", "root")
    assert f.files["/etc/kubernetes/missing"] is None
    assert f.files["/etc/etcd/pki/server.key"].mode == 0o600
    assert f.sha256("/etc/kubernetes/missing") is None
    assert f.units["docker.service"] == UnitState("loaded", "active", "running", "enabled")
    assert f.units["docker.service"].running and f.units["docker.service"].enabled
    assert not f.units["etcd"].exists, "asked without .service: found by position"
    assert f.units["firewalld.service"].active == "failed" and not f.units["firewalld.service"].enabled
    assert f.container is None
    assert f.selinux == "Enforcing"
    assert f.has("yum") and not f.has("dnf")
    assert f.kernel_features == {"bridge-nf", "overlay"}
    # remote midpoint 0.5 vs local midpoint -9.5 (relative to ...000): the host runs 10 s ahead
    assert f.time_offset == pytest.approx(10.0)
    assert f.rtt == pytest.approx(0.5)


DEBIAN_NSPAWN = textwrap.dedent(f"""\
    {M} t0
    1700000100.000000000
    {M} os
    PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
    NAME="Debian GNU/Linux"
    VERSION_ID="12"
    VERSION="12 (bookworm)"
    VERSION_CODENAME=bookworm
    ID=debian
    HOME_URL="https://www.debian.org/"
    {M} arch
    x86_64
    {M} hostname
    h1
    {M} swaps
    Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
    {M} proc-tcp
      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
       1: 0B1212C6:0016 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1
       2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
      sl  local_address                         remote_address                        st
       0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0
       1: 00000000000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 0
    {M} virt
    systemd-nspawn
    {M} commands
    systemctl dnf rpm
    {M} t1
    1700000100.010000000
    """)


def test_debian_container_without_ss_rpm_or_units():
    f = facts.parse(DEBIAN_NSPAWN, host="h1", units=["ssh.service"])
    assert (f.os_family, f.os_id, f.os_version) == ("debian", "debian", "12")
    assert f.container == "systemd-nspawn"
    assert f.listening == (("0.0.0.0", 22), ("127.0.0.1", 8080), ("::", 22), ("::1", 25))
    assert f.packages is None, "no rpm section: rpm is not installed"
    assert f.units is None, "no units section: systemd does not run"
    assert f.selinux is None and f.swaps == () and f.cpus is None
    assert f.time_offset is None, "no local clock readings given"
    assert f.commands == {"systemctl", "dnf", "rpm"}


@pytest.mark.parametrize("text, expected", [
    ("LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*", (("127.0.0.53", 53),)),
    ("LISTEN 0 128 [::ffff:127.0.0.1]:6443 [::]:*", (("::ffff:127.0.0.1", 6443),)),
    ("0 128 *:22 *:*", (("*", 22),)),  # old iproute without the State column
    ("Recv-Q Send-Q Local Address:Port Peer Address:Port", ()),
    ("", ()),
])
def test_ss_variants(text, expected):
    assert facts.parse_ss(text) == expected


@pytest.mark.parametrize("line, expected", [
    ('ID="centos"', {"ID": "centos"}),
    ("ID=debian", {"ID": "debian"}),
    ("NAME='Red Hat Enterprise Linux Server'", {"NAME": "Red Hat Enterprise Linux Server"}),
    ('PRETTY_NAME="say \\"hi\\""', {"PRETTY_NAME": 'say "hi"'}),
    ("# comment\n\nBROKEN", {}),
    ('X="unterminated', {"X": "unterminated"}),
])
def test_os_release_values(line, expected):
    assert facts.parse_os_release(line) == expected


@pytest.mark.parametrize("os_id, like, family", [
    ("centos", "rhel fedora", "redhat"), ("rhel", "fedora", "redhat"),
    ("rocky", "rhel centos fedora", "redhat"), ("debian", "", "debian"), ("ubuntu", "debian", "debian"),
    ("sles", "suse", "suse"), ("alpine", "", "alpine"),
])
def test_os_family(os_id, like, family):
    assert facts.os_family(os_id, like) == family


@pytest.mark.parametrize("text, expected", [
    ("1700000000.123456789", 1700000000.123456789), ("1700000000.N", 1700000000.0), ("", None), ("x", None),
])
def test_epoch(text, expected):
    assert facts.parse_epoch(text) == expected


def test_units_matched_by_id_when_blocks_are_missing():
    text = "Id=b.service\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n"
    u = facts.parse_units(text, ["a.service", "b.service"])
    assert not u["a.service"].exists and u["b.service"].running


def test_files_short_output_means_missing():
    assert facts.parse_files("", ["/a", "/b"]) == {"/a": None, "/b": None}
    assert facts.parse_files("zz 644 root root\n", ["/a"]) == {"/a": None}


def test_truncated_output_is_an_error_with_host():
    with pytest.raises(Error) as e:
        facts.parse(f"{M} t0\n1\n", host="m2")
    assert "m2" in e.value.message and e.value.hint


def test_facts_are_frozen():
    f = facts.parse(DEBIAN_NSPAWN, host="h1")
    with pytest.raises(AttributeError):
        f.hostname = "x"
    with pytest.raises(TypeError):
        f.files["/x"] = None


def test_script_is_posix_sh_and_quotes_paths():
    s = facts.script(["/etc/it's here/a b"], ["my unit.service"], ["ls"])
    subprocess.run(["sh", "-n", "-c", s], check=True)  # parses
    assert "'/etc/it'\"'\"'s here/a b'" in s and "'my unit.service'" in s
    with pytest.raises(Error):
        facts.script(["relative"], [])


def test_gather_on_this_machine(tmp_path):
    p = tmp_path / "a file"
    p.write_bytes(b"abc")
    p.chmod(0o640)
    f = facts.gather(LocalConnector("ctl"), [str(p), str(tmp_path / "none")], [],
                     hash_cache=str(tmp_path / "cache" / "hashes"))  # never this machine's real cache
    assert f.host == "ctl" and f.os_id and f.arch and f.hostname
    assert f.sha256(str(p)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert f.files[str(p)].mode == 0o640 and f.files[str(tmp_path / "none")] is None
    assert abs(f.time_offset) < 0.5 and f.rtt >= 0
    assert f.disk_free_kb.get("/", 0) > 0 and "sha256sum" in f.commands
