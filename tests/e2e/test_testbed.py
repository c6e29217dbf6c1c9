"""The harness itself: hosts boot, talk over the bridge, install RPMs with dnf, and leave no trace."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest

from tests.e2e.testbed import ensure_rootfs

SPEC = textwrap.dedent("""\
    Name: tb-hello
    Version: 1.0
    Release: 1
    Summary: tiny test package
    License: MIT
    BuildArch: noarch
    AutoReqProv: no
    %global _build_id_links none
    %global __os_install_post %{nil}
    %description
    test stand-in
    %install
    mkdir -p %{buildroot}/usr/local/bin
    printf '#!/bin/sh\\necho hello from tb-hello\\n' > %{buildroot}/usr/local/bin/tb-hello
    chmod 755 %{buildroot}/usr/local/bin/tb-hello
    %files
    /usr/local/bin/tb-hello
    """)


def test_hosts_boot_with_identity_and_reach_each_other(testbed):
    ids = set()
    for h in testbed.hosts:
        out = testbed.ssh(h.n, "hostname; cat /etc/machine-id; systemctl is-system-running; "
                               "systemd-detect-virt -c; ip -4 -o addr show eth0").stdout.split("\n")
        assert out[0] == h.name
        ids.add(out[1])
        assert out[2] in ("running", "degraded"), out
        assert out[3] == "systemd-nspawn"
        assert f"{h.address}/24" in out[4]
    assert len(ids) == len(testbed.hosts), "every host has its own machine-id"
    for other in testbed.hosts[1:]:
        testbed.ssh(1, f"ping -c1 -W2 {other.name} >/dev/null")
        testbed.ssh(other.n, f"ping -c1 -W2 {testbed.control_address} >/dev/null")


def test_tb_user_has_passwordless_sudo_and_python3(testbed):
    assert testbed.ssh(2, "sudo -n id -u", user="tb").stdout.strip() == "0"
    out = testbed.ssh(2, "python3 -c 'import ssl, json, http.server; print(\"ok\")'").stdout
    assert out.strip() == "ok"


@pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
                    reason="rpmbuild/createrepo_c not installed (make apt: rpm, createrepo-c)")
def test_dnf_installs_an_rpm_from_a_repo_served_by_the_control_side(testbed, tmp_path):
    top, repo = tmp_path / "rpmbuild", tmp_path / "repo"
    (top / "SPECS").mkdir(parents=True)
    repo.mkdir()
    (top / "SPECS/tb-hello.spec").write_text(SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", "_binary_payload w6.gzdio", str(top / "SPECS/tb-hello.spec")], check=True)
    for rpm in (top / "RPMS").rglob("*.rpm"):
        shutil.copy(rpm, repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True)
    url = testbed.serve(repo, port=8080)
    repo_file = f"[tb]\nname=tb\nbaseurl={url}\nenabled=1\ngpgcheck=0\n"
    testbed.ssh(3, "cat > /etc/yum.repos.d/tb.repo", input=repo_file)
    testbed.ssh(3, "dnf -y -q install tb-hello", timeout=120)
    assert testbed.ssh(3, "tb-hello").stdout.strip() == "hello from tb-hello"
    assert testbed.ssh(3, "rpm -q tb-hello", user="tb").stdout.startswith("tb-hello-1.0-1")
    testbed.ssh(3, "dnf -y -q remove tb-hello", timeout=120)
    assert testbed.ssh(3, "rpm -q tb-hello", check=False).returncode != 0


def test_teardown_leaves_no_netns_mounts_processes_or_cgroups(testbed_factory):
    tb = testbed_factory.create(2)
    tb.ssh(1, "nohup sleep 600 >/dev/null 2>&1 &")  # a busy host must not keep anything alive
    assert tb.leftovers(), "a running testbed is visible to leftovers()"
    assert tb.down() == []
    assert tb.leftovers() == []
    assert not tb.rundir.exists()
    assert tb.down() == [], "down is safe twice"


def test_teardown_of_a_partial_setup(testbed_factory):
    # a testbed whose set-up stopped half way: network up, one overlay mounted, nothing booted
    tb = testbed_factory.new(2)
    rootfs = ensure_rootfs(str(tb.workdir))
    tb.rundir.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tb.key_path)], check=True)
    tb._net_up()
    tb._prep(tb.host(1), rootfs)
    assert any(x.startswith("mount ") for x in tb.leftovers())
    assert tb.down() == []
    assert tb.leftovers() == []
