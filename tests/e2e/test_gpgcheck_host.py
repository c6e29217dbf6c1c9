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
