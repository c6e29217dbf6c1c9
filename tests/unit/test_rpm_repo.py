"""make_repo: real tiny RPMs (rpmbuild) -> a yum-3 readable, reproducible repository (createrepo_c)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bundler.sources import rpm

pytestmark = pytest.mark.skipif(not (shutil.which("rpmbuild") and shutil.which("createrepo_c")),
                                reason="needs rpmbuild and createrepo_c")

SPEC = """Name: {name}
Version: {version}
Release: 1.el7
Summary: test package {name}
License: MIT
BuildArch: {arch}
AutoReqProv: no
{requires}
%description
test package
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {name} > %{{buildroot}}/usr/share/{name}/README
%files
/usr/share/{name}/README
"""
NS = {"c": "http://linux.duke.edu/metadata/common", "r": "http://linux.duke.edu/metadata/repo"}


def build_rpm(top: Path, name: str, version: str = "1.0", arch: str = "noarch", requires: str = "") -> Path:
    """Build one tiny RPM with rpmbuild; return its path."""
    spec = top / f"{name}.spec"
    spec.write_text(SPEC.format(name=name, version=version, arch=arch,
                                requires=f"Requires: {requires}" if requires else ""))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", "_binary_payload w6.gzdio", "--define", "_buildhost test",
                    "--define", "use_source_date_epoch_as_buildtime 1", str(spec)],
                   check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1526860800"})
    (out,) = (top / "RPMS" / arch).glob(f"{name}-{version}-*.rpm")
    return out


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    top = tmp_path_factory.mktemp("rpmbuild")
    return [build_rpm(top, "alpha"), build_rpm(top, "beta", requires="alpha"),
            build_rpm(top, "gamma", version="2.0")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_repo_lists_every_package_with_sha256(tmp_path, rpms):
    written = rpm.make_repo(rpms, tmp_path / "repo")
    repo = tmp_path / "repo"
    assert sorted(p.name for p in written if p.parent.name == "Packages") == sorted(p.name for p in rpms)
    assert all(p.exists() for p in written)
    repomd = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    types = {d.get("type"): d for d in repomd.findall("r:data", NS)}
    assert {"primary", "filelists", "other", "primary_db", "filelists_db", "other_db"} <= set(types)
    for data in types.values():  # yum 3 checks every file against repomd's sha256
        href = data.find("r:location", NS).get("href")
        checksum = data.find("r:checksum", NS)
        assert checksum.get("type") == "sha256" and checksum.text == sha256(repo / href)
    prim = types["primary"].find("r:location", NS).get("href")
    root = ET.fromstring(gzip.decompress((repo / prim).read_bytes()))
    pkgs = {p.find("c:name", NS).text: p for p in root.findall("c:package", NS)}
    assert set(pkgs) == {"alpha", "beta", "gamma"}
    for p in rpms:
        name = p.name.split("-")[0]
        assert pkgs[name].find("c:checksum", NS).text == sha256(p)
        assert pkgs[name].find("c:location", NS).get("href") == f"Packages/{p.name}"
    # the sqlite primary yum 3 actually reads lists them too
    db = types["primary_db"].find("r:location", NS).get("href")
    assert db.endswith(".sqlite.gz")
    (tmp_path / "p.sqlite").write_bytes(gzip.decompress((repo / db).read_bytes()))
    con = sqlite3.connect(tmp_path / "p.sqlite")
    assert sorted(r[0] for r in con.execute("select name from packages")) == ["alpha", "beta", "gamma"]
    con.close()


def test_make_repo_is_readable_by_libsolv(tmp_path, rpms):
    solv = pytest.importorskip("solv")
    rpm.make_repo(rpms, tmp_path / "repo")
    pool = solv.Pool()
    pool.setarch("x86_64")
    repo = pool.add_repo("t")
    repomd = ET.parse(tmp_path / "repo" / "repodata" / "repomd.xml").getroot()
    href = next(d for d in repomd.findall("r:data", NS) if d.get("type") == "primary").find(
        "r:location", NS).get("href")
    fp = solv.xfopen(str(tmp_path / "repo" / href))
    assert repo.add_rpmmd(fp, None, 0)
    fp.close()
    pool.createwhatprovides()
    sel = pool.select("beta", solv.Selection.SELECTION_NAME)
    solver = pool.Solver()
    assert not solver.solve(sel.jobs(solv.Job.SOLVER_INSTALL))
    assert sorted(s.name for s in solver.transaction().newsolvables()) == ["alpha", "beta"]


def test_make_repo_is_reproducible(tmp_path, rpms):
    # the same RPMs copied at another time (other mtimes) give byte-identical metadata
    copies = tmp_path / "copies"
    copies.mkdir()
    later = []
    for p in rpms:
        q = copies / p.name
        shutil.copyfile(p, q)
        os.utime(q, (2_000_000_000, 2_000_000_000))
        later.append(q)
    rpm.make_repo(rpms, tmp_path / "a")
    rpm.make_repo(later, tmp_path / "b")
    for name in ("repomd.xml",):
        assert (tmp_path / "a/repodata" / name).read_bytes() == (tmp_path / "b/repodata" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a/repodata").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b/repodata").iterdir())


def test_make_repo_replaces_a_previous_run(tmp_path, rpms):
    rpm.make_repo(rpms, tmp_path / "repo")
    written = rpm.make_repo(rpms[:1], tmp_path / "repo")
    assert [p.name for p in (tmp_path / "repo/Packages").iterdir()] == [rpms[0].name]
    assert len([p for p in written if p.parent.name == "repodata"]) == len(
        list((tmp_path / "repo/repodata").iterdir()))
