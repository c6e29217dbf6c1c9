"""bundler/contents.py: the manifest's typed components and trust from the lock and the bundle's entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import build, static
from bundler import contents as bundle_contents
from bundler import spec as specmod
from bundler.lock import UNCHECKED, LockedRepo
from contract.bundle import Entry, layout
from contract.bundle.contents import Check, ComponentKind, SourceKind
from contract.bundle.manifest import FileEntry, Manifest
from contract.errors import Error
from tests.unit.test_lock import SPEC, sample_lock

FPR = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
H = "0" * 64


@pytest.fixture
def spec() -> specmod.Spec:
    return specmod.load(SPEC)


def lock_of(spec):
    lk = build.selected(spec, sample_lock(spec))
    rpms = list(lk.rpms)
    rpms[0] = rpms[0].model_copy(update={"signature": FPR})
    rpms[1] = rpms[1].model_copy(update={"signature": UNCHECKED, "repo": "local"})
    repos = (LockedRepo(name="base", baseurl="http://mirror.centos.org/centos/7/os/x86_64/", gpgcheck=True,
                        gpgkey="http://mirror.centos.org/centos/7/os/x86_64/RPM-GPG-KEY-CentOS-7", key_sha256=H,
                        key_size=1, fingerprints=(FPR,), metadata="unsigned"),
             LockedRepo(name="local", baseurl="http://repo.example.test/", gpgcheck=False))
    images = list(lk.images)
    images[-1] = images[-1].model_copy(update={"source": "docker"})
    return lk.model_copy(update={"rpms": tuple(rpms), "repos": repos, "images": tuple(images)})


def entries_for(lk) -> list[Entry]:
    paths = [layout.binary_path(layout.stored_binary_name(b.url.rsplit("/", 1)[-1])) for b in lk.binaries]
    paths += [f"{layout.RPMS_UNCHECKED_DIR if r.repo == 'local' else layout.RPMS_DIR}/Packages/"
              f"{r.url.rsplit('/', 1)[-1]}" for r in lk.rpms]
    paths += [layout.image_blob(b.digest) for i in lk.images for b in i.blobs]
    paths += [layout.installer_path(f"wheels/{w}") for w in (
        "k8s_offline-0.1.0-py3-none-any.whl", "PyYAML-6.0.1-cp39-cp39-manylinux_2_17_x86_64.whl",
        "PyYAML-6.0.1-cp312-cp312-manylinux_2_17_x86_64.whl")]
    paths += [static.BUNDLE_PATH, layout.IMAGES_INDEX, layout.LOCK]
    return [Entry(p, Path("/nonexistent"), 1, H) for p in sorted(set(paths))]


def test_every_component_with_its_paths_and_how_it_was_checked(spec) -> None:
    lk = lock_of(spec)
    entries = entries_for(lk)
    c = bundle_contents.contents(spec, lk, entries)
    by_key = {x.key: x for x in c.components}
    server = by_key["binary/kubernetes-server"]
    assert server.paths == ("binaries/kubernetes-server-linux-amd64.tar",) and server.version == "1.10.3"
    tool = lk.rpms[1]
    assert by_key[f"rpm/{tool.name}"].paths == (f"rpms/unchecked/Packages/{tool.name}.rpm",)
    img = lk.images[0]
    assert by_key[f"image/{img.ref}"].version == img.digest
    assert by_key[f"image/{img.ref}"].paths == tuple(sorted(layout.image_blob(b.digest) for b in img.blobs))
    assert by_key["wheel/pyyaml"].paths == tuple(sorted(e.path_in_bundle for e in entries if "PyYAML" in
                                                        e.path_in_bundle))
    assert by_key["executable/installer-linux-amd64"].kind is ComponentKind.EXECUTABLE
    assert len(c.components) == len(lk.binaries) + len(lk.rpms) + len(lk.images) + 3

    checks = {t.key: t.check for t in c.trust}
    assert checks["binary/kubernetes-server"] is Check.UPSTREAM_DIGEST
    assert checks["binary/flannel"] is Check.FIRST_SEEN
    assert checks[f"rpm/{lk.rpms[0].name}"] is Check.GPG_SIGNED
    assert checks[f"rpm/{tool.name}"] is Check.UNCHECKED
    assert checks[f"rpm/{lk.rpms[2].name}"] is Check.UNRECORDED  # the sample lock records no signature
    assert checks[f"image/{lk.images[0].ref}"] is Check.REGISTRY_DIGEST
    assert checks[f"image/{lk.images[-1].ref}"] is Check.FIRST_SEEN  # exported from a docker daemon
    assert (checks["rpm-repo/base"], checks["rpm-repodata/base"]) == (Check.GPG_SIGNED, Check.UNSIGNED)
    assert (checks["rpm-repo/local"], checks["rpm-repodata/local"]) == (Check.UNCHECKED, Check.UNCHECKED)
    assert (checks["wheel/k8s-offline"], checks["wheel/pyyaml"]) == (Check.BUILT, Check.FIRST_SEEN)
    assert checks["executable/installer-linux-amd64"] is Check.BUILT
    assert next(t for t in c.trust if t.key == "rpm-repo/base").keys == (FPR,)
    assert c.options == {"dns": "kube-dns", "docker": "rpm"}
    # a valid format 2 manifest: every path a file, every component with its trust entry
    files = tuple(FileEntry(e.path_in_bundle, 1, H) for e in entries)
    Manifest(2, "k8s", "1.10.3", "2018-05-21T10:00:00Z", H, H, c.components, files, trust=c.trust,
             options=c.options).check()
    assert {t.kind for t in c.trust} == set(SourceKind)


def test_a_lock_entry_missing_from_the_bundle_is_a_bug_said_plainly(spec) -> None:
    lk = lock_of(spec)
    entries = [e for e in entries_for(lk) if not e.path_in_bundle.startswith("rpms/unchecked/")]
    with pytest.raises(Error) as e:
        bundle_contents.contents(spec, lk, entries)
    assert "is not in the bundle's repositories" in e.value.message and "bug" in e.value.hint
