"""On a booted host, dnf with gpgcheck=1 installs a signed package and refuses one changed after signing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import cluster
from tests.fixtures.upstream import rpms, yumrepos

pytestmark = pytest.mark.e2e


def nvra(p) -> str:
    return f"{p.name}-{p.evr}.{p.arch}"


def installable_on_base():
    """A closure package from the CentOS base repo whose requirements the base set alone satisfies."""
    base = [p for p in rpms.PACKAGES if nvra(p) in rpms.INSTALLED]
    caps = set()
    for p in base:
        caps |= {p.name, *(x.split()[0] for x in p.provides), *p.files}
    for p in rpms.PACKAGES:
        if (nvra(p) in rpms.EXPECTED_CLOSURE and p.repo == "base"
                and all(r.split()[0] in caps for r in p.requires)):
            return p, base
    pytest.fail("no closure package installs on the base set alone: the fixture table changed")


def make_repo(dest: Path, rpm: Path, tamper: bool) -> None:
    (dest / "Packages").mkdir(parents=True)
    target = dest / "Packages" / rpm.name
    shutil.copyfile(rpm, target)
    if tamper:  # one payload byte: the repodata below is regenerated, so only the signature can catch it
        data = bytearray(target.read_bytes())
        data[-40] ^= 0xFF
        target.write_bytes(bytes(data))
    subprocess.run(["createrepo_c", "--quiet", str(dest)], check=True)


def test_dnf_gpgcheck_installs_signed_and_refuses_tampered(upstreams, testbed_factory):
    tb = testbed_factory.create(1)
    pkg, base = installable_on_base()
    www = upstreams.www
    pkg_file = www / yumrepos.repo_path("base") / "Packages" / f"{nvra(pkg)}.rpm"
    base_dir = www / yumrepos.repo_path("base") / "Packages"
    cluster.register_base_rpms(tb, [1], [base_dir / f"{nvra(p)}.rpm" for p in base])
    root = tb.merged(1)
    make_repo(root / "srv/good", pkg_file, tamper=False)
    make_repo(root / "srv/bad", pkg_file, tamper=True)
    key = root / "etc/pki/rpm-gpg/RPM-GPG-KEY-k8s-offline-base"
    key.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(upstreams.signing_keys["centos"]["public"], key)
    for name in ("good", "bad"):
        (root / f"etc/yum.repos.d/{name}.repo").write_text(
            f"[{name}]\nname={name}\nbaseurl=file:///srv/{name}\nenabled=0\ngpgcheck=1\nrepo_gpgcheck=0\n"
            f"gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-k8s-offline-base\n")
    bad = tb.ssh(1, f"dnf -y --disablerepo='*' --enablerepo=bad install {pkg.name}", check=False)
    assert bad.returncode != 0, bad.stdout
    out = (bad.stdout + bad.stderr).lower()
    assert "digest" in out or "signature" in out or "gpg" in out, out[-2000:]
    assert tb.ssh(1, f"rpm -q {pkg.name}", check=False).returncode != 0
    good = tb.ssh(1, f"dnf -y --disablerepo='*' --enablerepo=good install {pkg.name}", check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    assert tb.ssh(1, f"rpm -q {pkg.name}").stdout.strip() == nvra(pkg)


def test_unchecked_repo_installs_unsigned_packages_the_checked_one_refuses(upstreams, testbed_factory, tmp_path):
    """The site repo file as rendered for a bundle with rpms/unchecked/: gpgcheck=1 on the main repository,
    gpgcheck=0 on the second one; the plan's `--enablerepo='k8s-offline*'` uses both."""
    from installer import inventory as inventory_mod
    from installer import render
    from installer.plan_rules import REPO_DIR

    tb = testbed_factory.create(1)
    pkg, base = installable_on_base()
    base_dir = upstreams.www / yumrepos.repo_path("base") / "Packages"
    cluster.register_base_rpms(tb, [1], [base_dir / f"{nvra(p)}.rpm" for p in base])
    unsigned = tmp_path / f"{nvra(pkg)}.rpm"
    shutil.copyfile(base_dir / unsigned.name, unsigned)
    subprocess.run(["rpmsign", "--delsign", str(unsigned)], check=True, capture_output=True)
    root = tb.merged(1)
    repo = root / REPO_DIR.lstrip("/")
    key = root / "etc/pki/rpm-gpg/RPM-GPG-KEY-k8s-offline-base"
    key.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(upstreams.signing_keys["centos"]["public"], key)
    inv = inventory_mod.load(Path(__file__).resolve().parents[2] / "inventory.example.yaml")
    files = render.registry_host_files(inv, gpgcheck=True, gpgkey=[f"file:///{key.relative_to(root)}"],
                                       unchecked_repo=True)
    (root / "etc/yum.repos.d/k8s-offline.repo").write_text(files["/etc/yum.repos.d/k8s-offline.repo"]
                                                           .content.decode())
    install = f"dnf -y --disablerepo='*' --enablerepo='k8s-offline*' install {pkg.name}"

    make_repo(repo, unsigned, tamper=False)  # unsigned in the checked repository: refused
    (repo / "unchecked" / "Packages").mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", str(repo / "unchecked")], check=True)
    refused = tb.ssh(1, install, check=False)
    assert refused.returncode != 0 and tb.ssh(1, f"rpm -q {pkg.name}", check=False).returncode != 0

    shutil.move(str(repo / "Packages" / unsigned.name), str(repo / "unchecked" / "Packages" / unsigned.name))
    # as the bundler writes them: each repository's metadata lists only its own Packages/
    subprocess.run(["createrepo_c", "--quiet", "--excludes", "unchecked/*", str(repo)], check=True)
    subprocess.run(["createrepo_c", "--quiet", str(repo / "unchecked")], check=True)
    tb.ssh(1, "dnf clean metadata", check=False)
    ok = tb.ssh(1, install, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert tb.ssh(1, f"rpm -q {pkg.name}").stdout.strip() == nvra(pkg)
