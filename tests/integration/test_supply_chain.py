"""The trust chain against the signed stand-in upstreams: pinned keys, RPM and repomd signatures, tags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bundler import fetch
from bundler import lock as lockfile
from bundler import spec as specmod
from bundler.cache import Cache
from bundler.lock import UNCHECKED
from bundler.sources import gpg
from contract.errors import Error
from tests.fixtures.upstream import images as fixture_images
from tests.fixtures.upstream import rpms as fixture
from tests.fixtures.upstream import signing

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REAL_CENTOS_FPR = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"


@pytest.fixture(scope="module")
def spec(upstreams) -> specmod.Spec:
    """The default spec pinning the test keys (the `up` command's bundle-spec.yaml), through the stand-ins."""
    return specmod.load(upstreams.spec_file, mirrors=upstreams.mirrors_file)


@pytest.fixture(scope="module")
def locked(spec, upstreams, session, tmp_path_factory) -> Any:
    """The default fixture spec locked once (every RPM downloaded and verified) and its cache."""
    cache = Cache(tmp_path_factory.mktemp("supply-cache"))
    return fetch.lock(spec, upstreams.spec_file, session, cache, jobs=4), cache


def fpr(upstreams, name: str) -> str:
    return upstreams.signing_keys[name]["fingerprint"]


def repo(upstreams, name: str, url: str, **kw: Any) -> specmod.Repo:
    """A spec repo pinning a test key (centos by default)."""
    key = kw.pop("key", "centos")
    gpgkey = next(u for u, n in signing.KEY_URLS.items() if n == key)
    return specmod.Repo(name=name, baseurl=url, gpgkey=gpgkey, fingerprints=(fpr(upstreams, key),), **kw)


def trap_spec(spec: specmod.Spec, upstreams, package: str, repo_name: str = "suspect", **repo_kw: Any
              ) -> specmod.Spec:
    """The fixture spec with one trap repo added and only `package` requested (no base: the traps need none)."""
    r = repo(upstreams, repo_name, fixture.TRAP_REPOS[repo_name], **repo_kw)
    rpms = spec.rpms.model_copy(update={"repos": (spec.rpms.repos[0], r), "base": (),
                                        "packages": (specmod.Package(name=package),)})
    return spec.model_copy(update={"rpms": rpms, "binaries": (), "images": ()})


def lock_error(spec: specmod.Spec, upstreams, session, tmp_path: Path) -> Error:
    with pytest.raises(Error) as e:
        fetch.lock(spec, upstreams.spec_file, session, Cache(tmp_path / "cache"))
    return e.value


# ---------------------------------------------------------------- the fixtures are signed


def test_fixture_repos_are_signed_with_their_test_keys(upstreams) -> None:
    for name, d in upstreams.repo_dirs.items():
        key = gpg.read_key(Path(upstreams.signing_keys[fixture.SIGNERS[name]]["public"]), name)
        files = [(f.name, f) for f in sorted((d / "Packages").glob("*.rpm"))]
        signed = gpg.verify_rpms(files, [key], name)
        assert set(signed.values()) == {fpr(upstreams, fixture.SIGNERS[name])} and len(signed) == len(files)
    assert (upstreams.repo_dirs["docker-ce-stable"] / "repodata" / "repomd.xml.asc").exists()
    assert not (upstreams.repo_dirs["base"] / "repodata" / "repomd.xml.asc").exists()


def test_up_writes_a_spec_pinning_the_test_keys(upstreams, session) -> None:
    s = specmod.load(upstreams.spec_file)
    real = specmod.load(ROOT / "bundle-spec.yaml")
    assert {r.name: r.fingerprints for r in s.rpms.repos} == {
        "base": (fpr(upstreams, "centos"),), "updates": (fpr(upstreams, "centos"),),
        "extras": (fpr(upstreams, "centos"),), "docker-ce-stable": (fpr(upstreams, "docker"),)}
    # everything else is the project's spec
    assert s.model_copy(update={"rpms": real.rpms}) == real
    for r in s.rpms.repos:  # the key served at each gpgkey URL is the one pinned
        key = session.get(upstreams.url(r.gpgkey), timeout=5)
        assert key.status_code == 200 and b"BEGIN PGP PUBLIC KEY BLOCK" in key.content


# ---------------------------------------------------------------- the default spec: all verified


def test_default_spec_locks_with_every_signature_verified(locked, upstreams) -> None:
    lk, _ = locked
    signers = {"base": "centos", "updates": "centos", "extras": "centos", "docker-ce-stable": "docker"}
    assert lk.rpms and all(r.signature == fpr(upstreams, signers[r.repo]) for r in lk.rpms)
    by_name = {r.name: r for r in lk.repos}
    assert set(by_name) == set(signers)
    assert by_name["docker-ce-stable"].metadata == "signed"  # repomd.xml.asc verified
    assert {by_name[n].metadata for n in ("base", "updates", "extras")} == {"unsigned"}  # none published
    key = Path(upstreams.signing_keys["centos"]["public"]).read_bytes()
    assert by_name["base"].key_size == len(key) and by_name["base"].gpgcheck
    text = lockfile.dump(lk)
    assert f"signature: {fpr(upstreams, 'docker')}" in text and "key_sha256:" in text
    assert lockfile.from_data(yaml.safe_load(text)) == lk
    assert {r.key_sha256 for r in lk.repos} <= lk.digests()  # prune keeps the keys


def test_default_spec_fetch_verifies_and_lists_the_keys(locked, spec, session, tmp_path: Path) -> None:
    lk, _ = locked
    cold = Cache(tmp_path / "cold")
    res = fetch.fetch(spec, lk, cold, session, locked=True)
    keys = res.by_kind("key")
    assert {k.name for k in keys} == {r.repo for r in lk.rpms}
    assert all(k.path.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK") for k in keys)
    assert [k.name for k in fetch.key_files(lk, cold)] == sorted(r.name for r in lk.repos)


def test_binary_pins_come_from_upstream_digest_files(locked, upstreams) -> None:
    lk, _ = locked
    for b in lk.binaries:
        assert b.sha256 == upstreams.files[b.url]["sha256"]
    sources = {b.name: b.pin_source for b in lk.binaries}
    # .sha256 next to the file (dl.k8s.io) and SHA256SUMS (etcd) are upstream pins; the rest first-seen
    assert sources["kubernetes-server"] == sources["kubernetes-client"] == sources["etcd"] == "upstream"
    assert sources["flannel"] == sources["cni-plugins"] == "first-seen"


# ---------------------------------------------------------------- refusals


def test_real_fingerprint_pin_refuses_the_test_key(upstreams, session, tmp_path: Path) -> None:
    err = lock_error(specmod.load(ROOT / "bundle-spec.yaml", mirrors=upstreams.mirrors_file), upstreams,
                     session, tmp_path)
    text = err.render()
    assert "repo 'base'" in text and REAL_CENTOS_FPR in text and fpr(upstreams, "centos") in text


def test_unsigned_package_is_refused(spec, upstreams, session, tmp_path: Path) -> None:
    text = lock_error(trap_spec(spec, upstreams, "suspect-unsigned"), upstreams, session, tmp_path).render()
    assert "suspect-unsigned-1.0-1.el7.x86_64.rpm" in text and "unsigned" in text and "repo 'suspect'" in text


def test_package_signed_by_another_key_is_refused(spec, upstreams, session, tmp_path: Path) -> None:
    text = lock_error(trap_spec(spec, upstreams, "suspect-stranger"), upstreams, session, tmp_path).render()
    stranger_id = fpr(upstreams, "stranger")[-8:].lower()
    assert "suspect-stranger-1.0-1.el7.x86_64.rpm" in text and f"key ID {stranger_id}" in text
    assert "repo 'suspect'" in text and fpr(upstreams, "centos") in text  # what was pinned instead


def test_signed_package_of_the_trap_repo_passes(spec, upstreams, session, tmp_path: Path) -> None:
    lk = fetch.lock(trap_spec(spec, upstreams, "suspect-good"), upstreams.spec_file, session,
                    Cache(tmp_path / "cache"))
    assert [(r.name, r.signature) for r in lk.rpms] == [("suspect-good", fpr(upstreams, "centos"))]


def test_gpgcheck_false_passes_and_is_recorded(spec, upstreams, session, tmp_path: Path) -> None:
    s = trap_spec(spec, upstreams, "suspect-unsigned", gpgcheck=False)
    cache = Cache(tmp_path / "cache")
    lk = fetch.lock(s, upstreams.spec_file, session, cache)
    assert [(r.name, r.signature) for r in lk.rpms] == [("suspect-unsigned", UNCHECKED)]
    suspect = lk.repo("suspect")
    assert (suspect.gpgcheck, suspect.metadata, suspect.key_sha256) == (False, "unchecked", None)
    assert "signature: unchecked" in lockfile.dump(lk)
    res = fetch.fetch(s, lk, cache, session, locked=True)
    assert [k.name for k in res.by_kind("key")] == []  # nothing to ship for an unchecked repo
    # turning gpgcheck back on is drift: the lock's unchecked RPMs must be re-locked (and then refused)
    with pytest.raises(Error) as e:
        fetch.fetch(trap_spec(spec, upstreams, "suspect-unsigned"), lk, cache, session, locked=True)
    assert any("gpgcheck true, the lock false" in d for d in e.value.details)


def test_stale_repomd_signature_is_refused(spec, upstreams, session, tmp_path: Path) -> None:
    text = lock_error(trap_spec(spec, upstreams, "stale-probe", repo_name="stale-repomd"), upstreams, session,
                      tmp_path).render()
    assert "repo 'stale-repomd'" in text and "repomd.xml" in text and "BAD signature" in text


def test_tampered_rpm_is_refused(upstreams, tmp_path: Path) -> None:
    src = upstreams.repo_dirs["base"] / "Packages" / "socat-1.7.3.2-2.el7.x86_64.rpm"
    bad = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF  # inside the payload: the signature no longer matches
    bad.write_bytes(bytes(data))
    key = gpg.read_key(Path(upstreams.signing_keys["centos"]["public"]), "centos")
    assert gpg.verify_rpms([(src.name, src)], [key], "base") == {src.name: fpr(upstreams, "centos")}
    with pytest.raises(Error) as e:
        gpg.verify_rpms([(bad.name, bad)], [key], "base")
    text = e.value.render()
    assert src.name in text and "repo base" in text and ("BAD" in text or "NOTFOUND" in text)


def test_detached_signature_checks(upstreams, tmp_path: Path) -> None:
    d = upstreams.repo_dirs["docker-ce-stable"] / "repodata"
    docker = gpg.read_key(Path(upstreams.signing_keys["docker"]["public"]), "docker")
    centos = gpg.read_key(Path(upstreams.signing_keys["centos"]["public"]), "centos")
    assert gpg.verify_detached(d / "repomd.xml", d / "repomd.xml.asc", [docker], "repomd", "d") == fpr(upstreams,
                                                                                                        "docker")
    with pytest.raises(Error) as e:  # right bytes, but the key is not pinned for the repo
        gpg.verify_detached(d / "repomd.xml", d / "repomd.xml.asc", [centos], "repomd", "d")
    assert f"key ID {fpr(upstreams, 'docker')[-16:]}" in e.value.render()
    changed = tmp_path / "repomd.xml"
    changed.write_bytes((d / "repomd.xml").read_bytes() + b"\n")
    with pytest.raises(Error) as e:
        gpg.verify_detached(changed, d / "repomd.xml.asc", [docker], "repomd", "d")
    assert "BAD signature" in e.value.render()


def test_key_that_changed_since_lock_is_drift(locked, spec, session, tmp_path: Path) -> None:
    lk, _ = locked
    other = "0" * 64
    moved = lk.model_copy(update={"repos": tuple(r.model_copy(update={"key_sha256": other}) if r.name == "base"
                                                 else r for r in lk.repos)})
    with pytest.raises(Error) as e:
        fetch.fetch(spec, moved, Cache(tmp_path / "cold"), session, locked=True)
    assert "signing key at http://mirror.centos.org/centos/7/os/x86_64/RPM-GPG-KEY-CentOS-7 changed" in e.value.message
    assert "re-lock" in e.value.hint


def test_repinned_fingerprint_and_old_locks_are_drift(locked, spec, upstreams, session, tmp_path: Path) -> None:
    lk, cache = locked
    repos = tuple(r.model_copy(update={"fingerprints": (REAL_CENTOS_FPR,)}) if r.name == "base" else r
                  for r in spec.rpms.repos)
    repinned = spec.model_copy(update={"rpms": spec.rpms.model_copy(update={"repos": repos})})
    with pytest.raises(Error) as e:
        fetch.fetch(repinned, lk, cache, session, locked=True)
    assert any(REAL_CENTOS_FPR in d and fpr(upstreams, "centos") in d for d in e.value.details)
    old = lk.model_copy(update={"repos": (), "rpms": tuple(r.model_copy(update={"signature": None})
                                                           for r in lk.rpms)})
    with pytest.raises(Error) as e:
        fetch.fetch(spec, old, cache, session, locked=True)
    assert "predates RPM signature checks" in e.value.message and "bundler lock" in e.value.hint
    unrecorded = lk.model_copy(update={"rpms": old.rpms})
    with pytest.raises(Error) as e:
        fetch.fetch(spec, unrecorded, cache, session, locked=True)
    assert any("have no signature recorded" in d for d in e.value.details)


# ---------------------------------------------------------------- images: a moved tag


PROBE = "k8s.gcr.io/retag-probe"


def _copy_manifest(http: requests.Session, registry: str, src: str, dest_repo: str, tag: str) -> str:
    """Point dest_repo:tag at src's manifest (blobs mounted from src's repository); returns its digest."""
    name, ref = fixture_images.split_ref(src)
    accept = ",".join(["application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.oci.image.manifest.v1+json"])
    r = http.get(f"http://{registry}/v2/{name}/manifests/{ref}", headers={"Accept": accept}, timeout=10)
    r.raise_for_status()
    doc = json.loads(r.content)
    pusher = fixture_images.Pusher(registry)
    for d in [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]:
        pusher.pushed[d] = name
        pusher.blob(dest_repo, d, b"")  # always a mount: the source repository has it
    return pusher.manifest(dest_repo, tag, r.headers["Content-Type"], r.content)


def test_moved_tag_fails_the_build_until_relocked(upstreams, session, tmp_path: Path) -> None:
    http = requests.Session()
    http.trust_env = False
    first = _copy_manifest(http, upstreams.registry_a, "k8s.gcr.io/pause-amd64:3.1", PROBE, "moving")
    base = specmod.load(upstreams.spec_file, mirrors=upstreams.mirrors_file)
    s = base.model_copy(update={"binaries": (), "rpms": base.rpms.model_copy(update={"packages": ()}),
                                "images": (specmod.Image(ref=f"{PROBE}:moving"),)})
    cache = Cache(tmp_path / "cache")
    spec_path = tmp_path / "bundle-spec.yaml"
    shutil.copyfile(upstreams.spec_file, spec_path)
    try:
        lk = fetch.lock(s, spec_path, session, cache)
        assert lk.image(f"{PROBE}:moving").digest == first
        second = _copy_manifest(http, upstreams.registry_a, "k8s.gcr.io/heapster-amd64:v1.5.3", PROBE, "moving")
        assert second != first
        with pytest.raises(Error) as e:
            fetch.fetch(s, lk, cache, session, locked=True)
        text = e.value.render()
        assert f"image {PROBE}:moving: locked {first}, the registry now serves {second}" in text
        assert "re-lock with `bundler lock`" in text
        relocked = fetch.lock(s, spec_path, session, cache)
        assert fetch.fetch(s, relocked, cache, session, locked=True).lock.image(f"{PROBE}:moving").digest == second
    finally:
        for digest in {first, locals().get("second")} - {None}:  # leave the shared registry storage as it was
            http.delete(f"http://{upstreams.registry_a}/v2/{PROBE}/manifests/{digest}", timeout=10)
