"""bundler build end to end against the stand-in upstreams: a signed bundle the installer and openssl verify."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests
import yaml
import zstandard

from bundler import build
from bundler import lock as lock_mod
from bundler.cache import Cache
from bundler.sources.oci_layout import ref_name
from contract import bundle as fmt
from contract.bundle.contents import FINDING_TEXT
from contract.bundle.manifest import parse_created
from contract.errors import Error

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
CREATED = "2026-01-02T03:04:05Z"


@pytest.fixture(scope="module")
def built(upstreams, tmp_path_factory):
    """One bundle built from the stand-ins with the default spec (installer wheels for this Python only)."""
    d = tmp_path_factory.mktemp("build")
    spec = d / "bundle-spec.yaml"
    shutil.copyfile(upstreams.spec_file, spec)  # the project spec with the stand-ins' signing keys pinned
    fmt.generate_keys(d / "keys")  # as `bundler keygen`: bundle-p256.key beside bundle.key adds the P-256 signature
    cache = Cache(d / "cache")
    s = build.run_build(spec, upstreams.mirrors_file, d / "keys" / "bundle.key", d / "dist", cache,
                        pythons=[PY], created=CREATED, progress=None)
    return {"dir": d, "spec": spec, "cache": cache, "summary": s, "pub": d / "keys" / "bundle.pub",
            "key": d / "keys" / "bundle.key", "mirrors": upstreams.mirrors_file,
            "p256_pub": d / "keys" / "bundle-p256.pub"}


def test_bundle_verifies_and_holds_everything(built):
    s = built["summary"]
    pub = fmt.load_public_key(built["pub"])
    report = fmt.verify_bundle(s.bundle, pub)
    assert report.files == s.files and report.name == "k8s" and report.version == "1.10.3"
    manifest, _, _ = fmt.read_manifest(s.bundle, pub)
    paths = {f.path for f in manifest.files}
    lk = lock_mod.load(s.lock_path)
    for b in lk.binaries:
        assert fmt.layout.binary_path(fmt.layout.stored_binary_name(b.url.rsplit('/', 1)[-1])) in paths
    assert "binaries/kubernetes-server-linux-amd64.tar" in paths  # stored without its gzip layer
    assert "binaries/docker-compose-Linux-x86_64" in paths and manifest.by_path()[
        "binaries/docker-compose-Linux-x86_64"].mode == 0o755
    rpms = {p for p in paths if p.startswith("rpms/") and p.endswith(".rpm")}
    assert len(rpms) == len(lk.rpms) and any("docker-ce-18.09.1" in p for p in rpms)
    assert not any("docker-ce-18.09.2" in p for p in rpms)
    assert "rpms/repodata/repomd.xml" in paths
    assert {"images/index.json", "images/oci-layout"} <= paths
    blobs = [p for p in paths if p.startswith("images/blobs/sha256/")]
    wrappers = sum(i.media_type == "application/vnd.docker.distribution.manifest.v2+json" for i in lk.images)
    assert wrappers and len(blobs) == len({b.digest for i in lk.images for b in i.blobs} | {i.digest for i in lk.images}) \
        + wrappers  # plus the one-entry index skopeo 1.9 reads each Docker manifest through
    assert {"sbom.spdx.json", "bundle-lock.yaml", "bundle-spec.yaml"} <= paths
    assert any(p.startswith("installer/wheels/k8s_offline-") for p in paths)
    assert f"installer/requirements-cp{PY.replace('.', '')}.txt" in paths
    assert {f"manifests/{m}" for m in ("kube-dns.yaml.j2", "dashboard.yaml.j2")} <= paths
    exe = manifest.by_path()["installer/installer-linux-amd64"]
    assert exe.mode == 0o755 and exe.size > 10_000_000
    assert s.bootstrap is not None and s.bootstrap.name == "k8s-1.10.3.bootstrap.tar" and s.bootstrap.exists()
    assert any(p.startswith("rpms/keys/RPM-GPG-KEY-k8s-offline-") for p in paths)


def test_signed_with_both_keys_of_the_key_directory(built):
    s = built["summary"]
    p256 = fmt.load_public_key(built["p256_pub"])
    assert s.fingerprint_p256 == fmt.fingerprint(p256) and s.p256_key == built["dir"] / "keys" / "bundle-p256.key"
    assert s.as_dict()["signatures"] == ["manifest.sig", "manifest.sig.p256"]
    report = fmt.verify_bundle(s.bundle, p256)
    assert report.checked == ("manifest.sig.p256",) and report.files == s.files
    assert fmt.verify_bundle(s.bundle, fmt.load_public_key(built["pub"])).checked == ("manifest.sig",
                                                                                        "manifest.sig.p256")
    with tarfile.open(s.bootstrap) as t:
        assert "manifest.sig.p256" in t.getnames()


def test_sbom_lists_every_component_with_its_hash(built, tmp_path):
    fmt.unpack_bundle(built["summary"].bundle, fmt.load_public_key(built["pub"]), tmp_path / "u")
    doc = json.loads((tmp_path / "u" / "sbom.spdx.json").read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    lk = lock_mod.load(built["summary"].lock_path)
    sums = {p["checksums"][0]["checksumValue"] for p in doc["packages"]}
    assert {b.sha256 for b in lk.binaries} <= sums
    assert {r.sha256 for r in lk.rpms} <= sums
    assert {i.digest.split(":")[1] for i in lk.images} <= sums
    purls = [p["externalRefs"][0]["referenceLocator"] for p in doc["packages"]]
    assert any(u.startswith("pkg:rpm/docker/docker-ce@18.09.1") for u in purls)
    assert any(u.startswith("pkg:oci/pause-amd64@sha256") for u in purls)
    # a release tarball: the SBOM names the upstream .tar.gz (its pinned hash) and the plain tar bundled
    etcd = next(p for p in doc["packages"] if p["name"] == "etcd")
    stored = tmp_path / "u" / "binaries" / "etcd-v3.3.1-linux-amd64.tar"
    assert f"bundled_as=binaries/{stored.name}" in etcd["comment"]
    assert f"bundled_sha256={hashlib.sha256(stored.read_bytes()).hexdigest()}" in etcd["comment"]
    upstream = next(b for b in lk.binaries if b.name == "etcd")
    assert etcd["checksums"][0]["checksumValue"] == upstream.sha256
    assert hashlib.sha256(built["cache"].path(upstream.sha256).read_bytes()).hexdigest() == upstream.sha256
    assert gzip.decompress(built["cache"].path(upstream.sha256).read_bytes()) == stored.read_bytes()


def test_sbom_is_valid_spdx_and_ntia_minimum_conformant(built, tmp_path):
    """Both independent PyPI checkers accept the built bundle's SBOM: every component has a supplier."""
    from tests.sbom_checks import problems

    fmt.unpack_bundle(built["summary"].bundle, fmt.load_public_key(built["pub"]), tmp_path / "u")
    path = tmp_path / "u" / "sbom.spdx.json"
    assert problems(path) == []
    suppliers = {p["name"]: p["supplier"] for p in json.loads(path.read_text())["packages"]}
    assert suppliers["kubernetes-server"] == "Organization: The Kubernetes Authors"
    assert suppliers["docker-ce"] == "Organization: Docker Inc."
    assert suppliers["k8s-offline-installer-static"] == "Organization: The k8s-offline project"
    assert all(s.startswith(("Organization: ", "Person: ")) for s in suppliers.values())


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_skopeo_inspects_every_image_of_the_bundle_by_name(built, tmp_path):
    fmt.unpack_bundle(built["summary"].bundle, fmt.load_public_key(built["pub"]), tmp_path / "u")
    lk = lock_mod.load(built["summary"].lock_path)
    for img in lk.images:
        name = f"oci:{tmp_path / 'u' / 'images'}:{ref_name(img.ref)}"
        r = subprocess.run(["skopeo", "inspect", name], capture_output=True, text=True, check=False)
        assert r.returncode == 0, (img.ref, r.stderr)  # Docker schema 2 images too (skopeo 1.9: "artifact")
        layers = json.loads(r.stdout)["Layers"]
        assert layers and layers == [b.digest for b in img.blobs[-len(layers):]]


def test_warm_rebuild_downloads_nothing_and_is_identical(built, tmp_path):
    s2 = build.run_build(built["spec"], built["mirrors"], built["key"], tmp_path, built["cache"], locked=True,
                         pythons=[PY], created=CREATED, progress=None)
    assert s2.downloaded_bytes == 0 and not s2.lock_written
    assert hashlib.sha256(s2.bundle.read_bytes()).hexdigest() == \
        hashlib.sha256(built["summary"].bundle.read_bytes()).hexdigest()


def test_split_parts_join_to_the_same_bundle(built, tmp_path):
    s = build.run_build(built["spec"], built["mirrors"], built["key"], tmp_path, built["cache"], locked=True,
                        pythons=[PY], created=CREATED, split_size="4M", progress=None)
    assert len(s.parts) > 3 and all(p.stat().st_size <= 4 << 20 for p in s.parts)
    joined = b"".join(p.read_bytes() for p in s.parts)
    assert joined == built["summary"].bundle.read_bytes()
    r = subprocess.run([str(BIN / "installer"), "verify", str(tmp_path), "--pub", str(built["pub"]), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s.parts[1].unlink()
    r = subprocess.run([str(BIN / "installer"), "verify", str(s.parts[0]), "--pub", str(built["pub"])],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "part 1 of" in r.stdout, r.stderr  # one part: checked alone
    r = subprocess.run([str(BIN / "installer"), "verify", str(tmp_path), "--pub", str(built["pub"])],
                       capture_output=True, text=True)
    assert r.returncode != 0 and s.parts[1].name in r.stderr


def test_locked_build_refuses_a_spec_change(built, tmp_path):
    spec = tmp_path / "bundle-spec.yaml"
    shutil.copyfile(built["spec"], spec)
    shutil.copyfile(built["summary"].lock_path, tmp_path / "bundle-lock.yaml")
    spec.write_text(spec.read_text().replace("  dns: kube-dns ", "  dns: coredns "))
    r = subprocess.run([str(BIN / "bundler"), "build", "--spec", str(spec), "--key", str(built["key"]),
                        "--out", str(tmp_path / "o"), "--mirrors", str(built["mirrors"]), "--locked",
                        "--cache", str(built["cache"].root), "--pythons", PY], capture_output=True, text=True)
    assert r.returncode == 1 and "bundler lock" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_offline_bootstrap_with_openssl_and_pip(built, tmp_path):
    """The README's offline bootstrap: openssl verifies manifest.sig (OpenSSL 3) or manifest.sig.p256 (any
    openssl down to CentOS 7's 1.0.2), sha256sum the installer, pip --no-index."""
    bundle = built["summary"].bundle
    work = tmp_path / "boot"
    work.mkdir()
    # 1. the first members only: manifest.json and its signatures
    subprocess.run(["tar", "--zstd", "-xf", str(bundle), "-C", str(work), "manifest.json", "manifest.sig",
                    "manifest.sig.p256"], check=True)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(built["pub"]), "-rawin",
                        "-in", str(work / "manifest.json"), "-sigfile", str(work / "manifest.sig")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(built["p256_pub"]), "-signature",
                        str(work / "manifest.sig.p256"), str(work / "manifest.json")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "Verified OK", r.stderr
    # 2. installer/ and its hashes against the (now trusted) manifest
    subprocess.run(["tar", "--zstd", "-xf", str(bundle), "-C", str(work), "installer"], check=True)
    manifest = json.loads((work / "manifest.json").read_text())
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in manifest["files"] if f["path"].startswith("installer/"))
    r = subprocess.run(["sha256sum", "-c", "--strict", "-"], input=sums, cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # 3. a venv with nothing but the bundled wheels (and no PYTHONPATH: pip would take a source tree on it,
    # with its egg-info, for k8s-offline already installed)
    offline_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                        str(work / "installer" / "wheels"), "--require-hashes", "-r",
                        str(work / "installer" / f"requirements-cp{PY.replace('.', '')}.txt")],
                       capture_output=True, text=True, env={**offline_env, "PIP_CONFIG_FILE": os.devnull})
    assert r.returncode == 0, r.stderr[-2000:]
    for pub in (built["pub"], built["p256_pub"]):
        r = subprocess.run([str(venv / "bin" / "installer"), "verify", str(bundle), "--pub", str(pub)],
                           capture_output=True, text=True, cwd=tmp_path, env=offline_env)
        assert r.returncode == 0, r.stderr


def test_tampered_manifest_fails_openssl(built, tmp_path):
    subprocess.run(["tar", "--zstd", "-xf", str(built["summary"].bundle), "-C", str(tmp_path), "manifest.json",
                    "manifest.sig", "manifest.sig.p256"], check=True)
    m = tmp_path / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"k8s"', b'"k9s"', 1))
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(built["pub"]), "-rawin",
                        "-in", str(m), "-sigfile", str(tmp_path / "manifest.sig")], capture_output=True, text=True)
    assert r.returncode != 0
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(built["p256_pub"]), "-signature",
                        str(tmp_path / "manifest.sig.p256"), str(m)], capture_output=True, text=True)
    assert r.returncode != 0 and "Verified OK" not in r.stdout


def test_bundle_is_a_plain_zstd_tar(built):
    """Stock tools read it: the members are what the manifest lists, manifest and its signatures first."""
    with open(built["summary"].bundle, "rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            names = [m.name for m in tar]
    assert names[:3] == ["manifest.json", "manifest.sig", "manifest.sig.p256"]
    assert len(names) == built["summary"].files + 3


def test_inspect_shows_the_trust_source_of_every_artifact(built):
    r = subprocess.run([str(BIN / "bundler"), "inspect", str(built["summary"].bundle), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    trust = {f"{t['kind']}/{t['name']}": t for t in d["trust"]}
    lk = lock_mod.load(built["summary"].lock_path)
    assert d["format_version"] == 2
    assert all(f"binary/{b.name}" in trust for b in lk.binaries)
    assert trust["binary/kubernetes-server"]["check"] == "upstream-digest"
    assert trust["binary/flannel"]["check"] == "first-seen"
    assert all(trust[f"rpm/{r.name}"]["check"] == "gpg-signed" and trust[f"rpm/{r.name}"]["keys"] == [r.signature]
               for r in lk.rpms)
    assert all(trust[f"image/{i.ref}"]["check"] == "registry-digest" for i in lk.images)
    assert any(t["kind"] == "rpm-repo" and t["check"] == "gpg-signed" and t["keys"] for t in d["trust"])
    assert trust["wheel/k8s-offline"]["check"] == "built"
    # every component names the files that make it, and every file named is in the manifest
    comps = {f"{c['kind']}/{c['name']}": c for c in d["components"]}
    assert comps["binary/etcd"]["paths"] == ["binaries/etcd-v3.3.1-linux-amd64.tar"]
    assert all(comps[f"rpm/{r.name}"]["paths"][0].endswith("/Packages/" + r.url.rsplit("/", 1)[-1]) for r in lk.rpms)
    assert comps["executable/installer-linux-amd64"]["paths"] == ["installer/installer-linux-amd64"]
    assert {k for k in comps if not k.startswith(("wheel/", "executable/"))} == \
        {f"binary/{b.name}" for b in lk.binaries} | {f"rpm/{r.name}" for r in lk.rpms} | {f"image/{i.ref}" for i in lk.images}
    assert d["warnings"] == [] and any(n.endswith("binary/flannel") or "binary/flannel," in n for n in d["notes"])
    text = subprocess.run([str(BIN / "bundler"), "inspect", str(built["summary"].bundle)],
                          capture_output=True, text=True).stdout
    assert "pinned when first seen" in text and "flannel" in text and "WARNING" not in text


def test_repos_with_gpgcheck_off_go_into_a_second_repository(built, tmp_path):
    """extras with gpgcheck off: its RPMs in rpms/unchecked/ (own repodata), the rest keeps gpgcheck=1."""
    doc = yaml.safe_load(built["spec"].read_text())
    for repo in doc["rpms"]["repos"]:
        if repo["name"] == "extras":
            repo["gpgcheck"] = False
            repo.pop("gpgkey", None)
            repo.pop("fingerprints", None)
    spec = tmp_path / "bundle-spec.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = build.run_build(spec, built["mirrors"], built["key"], tmp_path / "dist", built["cache"], pythons=[PY],
                        created=CREATED, progress=None, include_static=False)
    lk = lock_mod.load(s.lock_path)
    extras = {r.url.rsplit("/", 1)[-1] for r in lk.rpms if r.repo == "extras"}
    assert extras, "the closure has no extras package: the fixture table changed"
    site = tmp_path / "site"
    report = fmt.unpack_bundle(s.bundle, fmt.load_public_key(built["pub"]), site)
    # the typed trust says so, and verify warns from it (not from any wording)
    manifest, _, _ = fmt.read_manifest(s.bundle)
    unchecked = {f"rpm/{r.name}" for r in lk.rpms if r.repo == "extras"} | {"rpm-repo/extras", "rpm-repodata/extras"}
    sources = [t.key for t in manifest.trust if t.check is fmt.Check.UNCHECKED]
    assert set(sources) == unchecked
    assert report.warnings == (f"{FINDING_TEXT[fmt.Check.UNCHECKED]}: {', '.join(sources)}",)
    assert fmt.layout.has_unchecked_repo({p.relative_to(site).as_posix() for p in site.rglob("*")})
    assert {p.name for p in (site / "rpms" / "unchecked" / "Packages").iterdir()} == extras
    main = {p.name for p in (site / "rpms" / "Packages").iterdir()}
    assert main and not main & extras
    # each repository's metadata lists exactly its own packages
    for repo_dir, names in ((site / "rpms", main), (site / "rpms" / "unchecked", extras)):
        primary = next((repo_dir / "repodata").glob("*-primary.xml.gz"))
        listed = set(re.findall(r'<location href="Packages/([^"]+)"', gzip.decompress(primary.read_bytes()).decode()))
        assert listed == names
    assert any(p.name.startswith("RPM-GPG-KEY-k8s-offline-base") for p in (site / "rpms" / "keys").iterdir())
    assert not any("extras" in p.name for p in (site / "rpms" / "keys").iterdir())


# ---------------------------------------------------------------- offline and bit for bit from the lock


class CountingSession(requests.Session):
    """A session that records every request made through it (and still makes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.calls: list = []

    def request(self, method, url, *args, **kwargs):
        self.calls.append((method, url))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def dead_port():
    """A loopback port bound but never listening: every connection to it is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def locked_copy(built, where: Path, dead_port: int) -> tuple[Path, Path]:
    """The spec and its lock in `where`, and a mirrors file sending every upstream to a closed port."""
    where.mkdir(parents=True, exist_ok=True)
    spec = where / "bundle-spec.yaml"
    shutil.copyfile(built["spec"], spec)
    shutil.copyfile(built["summary"].lock_path, where / "bundle-lock.yaml")
    mirrors = where / "offline-mirrors.yaml"
    mirrors.write_text(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{dead_port}", built["mirrors"].read_text()))
    assert str(dead_port) in mirrors.read_text()
    return spec, mirrors


def test_locked_build_from_a_full_cache_makes_no_request(built, tmp_path, dead_port):
    """Every upstream down (a closed port): --locked builds from the lock and the cache alone."""
    spec, offline = locked_copy(built, tmp_path / "in", dead_port)
    session = CountingSession()
    s = build.run_build(spec, offline, built["key"], tmp_path / "dist", built["cache"], locked=True,
                        pythons=[PY], session=session, progress=None, level=3)
    assert session.calls == [] and s.downloaded_bytes == 0 and not s.lock_written
    assert fmt.verify_bundle(s.bundle, fmt.load_public_key(built["pub"])).files == built["summary"].files
    # asking the registries is an option (and what a build without --locked still does: tag drift is refused)
    with pytest.raises(Error) as e:
        build.run_build(spec, offline, built["key"], tmp_path / "d2", built["cache"], locked=True,
                        check_upstream=True, pythons=[PY], session=CountingSession(), progress=None,
                        include_static=False)
    assert f"127.0.0.1:{dead_port}" in e.value.render()
    with pytest.raises(Error) as e:
        build.run_build(spec, offline, built["key"], tmp_path / "d3", built["cache"], pythons=[PY],
                        session=CountingSession(), progress=None, include_static=False)
    assert f"127.0.0.1:{dead_port}" in e.value.render()


def test_locked_build_asks_the_live_upstreams_nothing(built, upstreams, tmp_path):
    """The same with the stand-ins up: not one request reaches the HTTP mirror; --check-upstream (the CLI
    option) asks the registries, and the mirror still sees nothing."""
    upstreams.reset_stats()
    session = CountingSession()
    s = build.run_build(built["spec"], built["mirrors"], built["key"], tmp_path / "dist", built["cache"],
                        locked=True, pythons=[PY], session=session, progress=None, include_static=False,
                        level=3)
    assert session.calls == [] and upstreams.stats() == {} and s.downloaded_bytes == 0
    r = subprocess.run([str(BIN / "bundler"), "build", "--spec", str(built["spec"]), "--key", str(built["key"]),
                        "--out", str(tmp_path / "o"), "--mirrors", str(built["mirrors"]), "--locked",
                        "--check-upstream", "--no-static", "--level", "3", "--cache", str(built["cache"].root),
                        "--pythons", PY, "--json"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["downloaded_bytes"] == 0 and upstreams.stats() == {}


def _outputs(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_rebuilds_from_the_same_lock_are_bit_for_bit_identical(built, tmp_path, monkeypatch):
    """Same lock, spec, keys and installer sources: the same bytes of every output file (bundle and its
    signatures, bootstrap tar) at another time; created is the lock's time, or SOURCE_DATE_EPOCH."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    lk = lock_mod.load(built["summary"].lock_path)
    assert lk.created and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lk.created)
    outs = []
    for n in range(2):
        if n:
            time.sleep(1.1)  # another wall-clock second: nothing may record it
        s = build.run_build(built["spec"], built["mirrors"], built["key"], tmp_path / f"dist{n}", built["cache"],
                            locked=True, pythons=[PY], progress=None, level=3)
        outs.append(_outputs(tmp_path / f"dist{n}"))
    assert outs[0] == outs[1] and set(outs[0]) == {s.bundle.name, s.bootstrap.name}
    manifest, _, _ = fmt.read_manifest(s.bundle, fmt.load_public_key(built["p256_pub"]))
    assert manifest.created == lk.created and s.signatures == ["manifest.sig", "manifest.sig.p256"]
    sbom = _member(s.bundle, "sbom.spdx.json")
    assert json.loads(sbom)["creationInfo"]["created"] == lk.created
    assert _headers(s.bundle) == {(int(parse_created(lk.created).timestamp()), 0, 0, "", "")}

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1526860800")
    s = build.run_build(built["spec"], built["mirrors"], built["key"], tmp_path / "sde", built["cache"],
                        locked=True, pythons=[PY], progress=None, include_static=False, level=3)
    manifest, _, _ = fmt.read_manifest(s.bundle, fmt.load_public_key(built["pub"]))
    assert manifest.created == "2018-05-21T00:00:00Z" and _headers(s.bundle) == {(1526860800, 0, 0, "", "")}
    assert json.loads(_member(s.bundle, "sbom.spdx.json"))["creationInfo"]["created"] == "2018-05-21T00:00:00Z"


def _member(bundle: Path, name: str) -> bytes:
    with open(bundle, "rb") as f:
        with tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(f), mode="r|") as tar:
            for m in tar:
                if m.name == name:
                    return tar.extractfile(m).read()
    raise AssertionError(f"{name} not in {bundle}")


def _headers(bundle: Path) -> set:
    """(mtime, uid, gid, uname, gname) of every member."""
    with open(bundle, "rb") as f:
        with tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(f), mode="r|") as tar:
            return {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in tar}
