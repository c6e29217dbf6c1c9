"""RPM closure, downloads and the yum repository against the stand-in CentOS 7 / Docker CE mirrors."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bundler import spec as specmod
from bundler.cache import Cache
from bundler.sources import rpm
from contract.errors import Error
from tests.fixtures.upstream import rpms as fixture

pytestmark = pytest.mark.integration
SPEC = Path(__file__).resolve().parents[2] / "bundle-spec.yaml"
NS = {"c": "http://linux.duke.edu/metadata/common", "r": "http://linux.duke.edu/metadata/repo"}


def nvra(a: rpm.RpmArtifact) -> str:
    return f"{a.name}-{a.version}-{a.release}.{a.arch}"


@pytest.fixture(scope="module")
def spec(upstreams):
    """The default spec, through the stand-ins, with the fixture's minimal-host base set."""
    s = specmod.load(SPEC, mirrors=upstreams.mirrors_file)
    # the fixture's BASE is the full minimal host; bundle-spec.yaml may list fewer names
    return s.model_copy(update={"rpms": s.rpms.model_copy(update={"base": tuple(fixture.BASE)})})


@pytest.fixture(scope="module")
def closure(spec, session):
    return rpm.resolve(spec, session)


def with_packages(spec, *packages):
    return spec.model_copy(update={"rpms": spec.rpms.model_copy(update={"packages": tuple(packages)})})


def test_closure_is_exactly_the_expected_one(closure):
    got = {nvra(a) for a in closure}
    assert got == set(fixture.EXPECTED_CLOSURE), (sorted(got - fixture.EXPECTED_CLOSURE),
                                                  sorted(fixture.EXPECTED_CLOSURE - got))
    assert fixture.violations(got) == []
    assert len(closure) == len(got)  # one artifact per package


def test_artifacts_carry_repo_url_and_checksum(closure, upstreams):
    by_name = {a.name: a for a in closure}
    ce = by_name["docker-ce"]
    assert (ce.epoch, ce.version, ce.repo) == (3, "18.09.1", "docker-ce-stable")
    assert ce.url.startswith(fixture.REPOS["docker-ce-stable"])  # upstream name, not the stand-in
    assert by_name["selinux-policy"].repo == "updates" and by_name["ipset"].repo == "updates"
    assert all(a.sha256 and len(a.sha256) == 64 and a.size > 0 for a in closure)


def test_default_spec_base_is_a_subset_of_the_minimal_host():
    # bundle-spec.yaml may name fewer base packages than the fixture's minimal host, never others
    assert set(specmod.load(SPEC).rpms.base) <= set(fixture.BASE)


def test_pin_wins_over_newer_version(spec, session):
    pinned = rpm.resolve(with_packages(spec, specmod.Package(name="docker-ce", version="18.09.1")), session)
    names = {nvra(a) for a in pinned}
    assert "docker-ce-18.09.1-3.el7.x86_64" in names and "docker-ce-18.09.2-3.el7.x86_64" not in names
    newest = rpm.resolve(with_packages(spec, specmod.Package(name="docker-ce")), session)
    assert "docker-ce-18.09.2-3.el7.x86_64" in {nvra(a) for a in newest}


def test_unknown_package_fails_with_hint(spec, session):
    with pytest.raises(Error) as e:
        rpm.resolve(with_packages(spec, specmod.Package(name="keepalive")), session)
    assert "did you mean keepalived" in e.value.render()


def test_fetch_and_make_repo(closure, spec, session, tmp_path):
    cache = Cache(tmp_path / "cache")
    out = rpm.fetch(closure, cache, session, jobs=4, mirrors=spec.mirrors)
    assert out["cache_hits"] == 0 and out["downloaded_bytes"] == sum(a.size for a in closure)
    again = rpm.fetch(closure, cache, session, mirrors=spec.mirrors)
    assert again["cache_hits"] == len(closure) and again["downloaded_bytes"] == 0

    repo = tmp_path / "repo"
    rpm.make_repo(_named_copies(closure, cache, tmp_path / "named"), repo)
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    href = next(d for d in root.findall("r:data", NS) if d.get("type") == "primary").find(
        "r:location", NS).get("href")
    prim = ET.fromstring(gzip.decompress((repo / href).read_bytes()))
    listed = {f"{p.findtext('c:name', namespaces=NS)}-{p.find('c:version', NS).get('ver')}-"
              f"{p.find('c:version', NS).get('rel')}.{p.findtext('c:arch', namespaces=NS)}"
              for p in prim.findall("c:package", NS)}
    assert listed == set(fixture.EXPECTED_CLOSURE)
    sums = {p.findtext("c:checksum", namespaces=NS) for p in prim.findall("c:package", NS)}
    assert sums == {a.sha256 for a in closure}
    # the bundled repository resolves on its own plus the installed base: nothing is missing
    solv = pytest.importorskip("solv")
    pool = solv.Pool()
    pool.setarch("x86_64")
    fp = solv.xfopen(str(repo / href))
    r = pool.add_repo("bundle")
    r.add_rpmmd(fp, None, 0)
    fp.close()
    assert r.nsolvables == len(closure)


def _named_copies(closure, cache, d: Path):
    """Cache objects under their RPM file names (hard links), as the bundle writer lays them out."""
    d.mkdir()
    out = []
    for a in closure:
        p = d / a.filename
        p.hardlink_to(cache.path(a.sha256))
        out.append(p)
    return out


def test_tampered_rpm_is_refused(closure, spec, session, upstreams, tmp_path):
    a = next(x for x in closure if x.name == "socat")
    upstreams.fault(a.url, "wrong", times=10)
    try:
        with pytest.raises(Error) as e:
            rpm.fetch([a], Cache(tmp_path / "c"), session, mirrors=spec.mirrors)
        assert "sha256 mismatch" in e.value.render()
    finally:
        upstreams.clear_faults()


def test_reset_mid_download_is_retried(closure, spec, session, upstreams, tmp_path):
    a = next(x for x in closure if x.name == "keepalived")
    upstreams.fault(a.url, "reset", times=1, after=100)
    try:
        out = rpm.fetch([a], Cache(tmp_path / "c"), session, mirrors=spec.mirrors)
    finally:
        upstreams.clear_faults()
    assert Cache(tmp_path / "c").has(a.sha256) and out["cache_hits"] == 0


def test_resolve_shows_each_repos_metadata_to_the_hook(spec, session):
    seen = {}

    def check(repo, repomd, asc):
        assert repomd.startswith(b"<?xml")
        seen[repo.name] = asc

    rpm.resolve(spec, session, check_repomd=check)
    assert set(seen) == {r.name for r in spec.rpms.repos}
    assert seen["docker-ce-stable"].startswith(b"-----BEGIN PGP SIGNATURE")  # Docker CE publishes repomd.xml.asc
    assert seen["base"] is None  # CentOS mirrors do not
