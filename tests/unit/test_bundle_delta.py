"""Delta bundles: the complete bundle's signed manifest, only the members the base lacks, combined on site
with the unpacked base into the complete bundle, every member checked (contract/bundle/delta.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from contract.bundle import (
    Entry,
    generate_keypair,
    inspect_bundle,
    layout,
    load_private_key,
    load_public_key,
    unpack_bundle,
    verify_bundle,
    write_bundle,
)
from contract.bundle.delta import Base, BaseDir, Delta, omitted
from contract.bundle.manifest import Manifest
from contract.errors import Error, ValidationError
from tests.typed_contents import typed

CREATED = "2018-06-01T10:00:00Z"
SPEC = "a" * 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key_path, pub_path = generate_keypair(tmp_path_factory.mktemp("keys"))
    return load_private_key(key_path), load_public_key(pub_path)


def _write(src: Path, contents: dict) -> list[Entry]:
    out = []
    for path, data in sorted(contents.items()):
        p = src / hashlib.sha256(path.encode()).hexdigest()[:12]
        p.write_bytes(data)
        out.append(Entry(path, p, len(data), hashlib.sha256(data).hexdigest(), 0o755 if "bin" in path else 0o644))
    return out


SHARED_LAYER = os.urandom(300_000)
OLD = {
    layout.binary_path("kubernetes-server-linux-amd64.tar"): b"server 1.10.3 " * 5000,
    layout.binary_path("etcd-v3.3.1-linux-amd64.tar"): b"etcd 3.3.1 " * 4000,
    layout.rpm_path("docker-ce-18.09.1-3.el7.x86_64.rpm"): os.urandom(50_000),
    layout.image_blob(hashlib.sha256(SHARED_LAYER).hexdigest()): SHARED_LAYER,
    layout.IMAGES_INDEX: b'{"manifests": ["old"]}',
    layout.LOCK: b"lock: 1.10.3\n",
}
NEW = {
    **{k: v for k, v in OLD.items() if "kubernetes-server" not in k},
    layout.binary_path("kubernetes-server-linux-amd64.tar"): b"server 1.10.4 " * 5000,
    # the same content under another name is taken from the base too (found by sha256)
    layout.binary_path("etcd-v3.3.1-renamed.tar"): b"etcd 3.3.1 " * 4000,
    layout.IMAGES_INDEX: b'{"manifests": ["new"]}',
    layout.LOCK: b"lock: 1.10.4\n",
}


def _bundle(out: Path, version: str, entries, keys, lock: str, **kw):
    return write_bundle(out, "k8s", version, entries, keys[0], spec_sha256=SPEC, lock_sha256=lock,
                        **typed({"binary/kubernetes-server": version},
                                layout.binary_path("kubernetes-server-linux-amd64.tar")), created=CREATED, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory, keys):
    """The old bundle unpacked (the base), the complete new bundle, and the delta from the one to the other."""
    t = tmp_path_factory.mktemp("delta")
    (t / "src-old").mkdir()
    (t / "src-new").mkdir()
    old_entries, new_entries = _write(t / "src-old", OLD), _write(t / "src-new", NEW)
    old = _bundle(t / "old", "1.10.3", old_entries, keys, "1" * 64)
    unpack_bundle(old.path, keys[1], t / "base")
    base_manifest = (t / "base" / layout.MANIFEST).read_bytes()
    full = _bundle(t / "full", "1.10.4", new_entries, keys, "2" * 64)
    have = {e.sha256 for e in old_entries}
    delta = Delta(Base("k8s", "1.10.3", hashlib.sha256(base_manifest).hexdigest(), "1" * 64),
                  omitted(((e.path_in_bundle, e.sha256) for e in new_entries), have))
    d = _bundle(t / "delta", "1.10.4", new_entries, keys, "2" * 64, delta=delta)
    return {"t": t, "old": old, "full": full, "delta": d, "base": t / "base", "spec": delta}


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_delta_signs_the_complete_manifest_and_carries_only_what_the_base_lacks(world, keys) -> None:
    full, d, spec = world["full"], world["delta"], world["spec"]
    assert d.path.name == "k8s-1.10.4.delta-from-1.10.3.bundle.tar.zst"
    assert d.manifest.to_bytes() == full.manifest.to_bytes()  # byte for byte what the full build signed
    assert set(spec.from_base) == {layout.rpm_path("docker-ce-18.09.1-3.el7.x86_64.rpm"),
                                   layout.image_blob(hashlib.sha256(SHARED_LAYER).hexdigest()),
                                   layout.binary_path("etcd-v3.3.1-linux-amd64.tar"),
                                   layout.binary_path("etcd-v3.3.1-renamed.tar")}
    assert d.size < full.size - 300_000  # the random layer and RPM are not in it
    info = inspect_bundle(d.path, keys[1])
    assert info["signatures"] == [layout.SIGNATURE]
    assert info["delta"]["base"]["version"] == "1.10.3"
    assert info["delta"]["from_base"]["files"] == 4
    assert info["delta"]["carried"]["files"] == len(NEW) - 4
    assert info["delta"]["from_base"]["kinds"]["image"] == {"files": 1, "bytes": len(SHARED_LAYER)}
    assert "delta" not in inspect_bundle(full.path, keys[1])


def test_combined_with_its_base_it_unpacks_into_the_complete_bundle(world, keys, tmp_path) -> None:
    report = unpack_bundle(world["delta"].path, keys[1], tmp_path / "combined", base=BaseDir(world["base"]))
    unpack_bundle(world["full"].path, keys[1], tmp_path / "full")
    assert _tree(tmp_path / "combined") == _tree(tmp_path / "full")
    assert report.base_checked and report.from_base_files == 4 and report.files == len(NEW)
    assert report.delta_base.startswith("k8s 1.10.3")
    assert report.bytes == world["full"].manifest.total_size
    # the combined bundle is in turn a base: it says what it is
    assert BaseDir(tmp_path / "combined").manifest == world["full"].manifest


def test_verify_alone_checks_what_it_carries_and_says_what_it_did_not(world, keys) -> None:
    r = verify_bundle(world["delta"].path, keys[1])
    assert not r.base_checked and r.from_base_files == 4
    assert r.bytes == world["full"].manifest.total_size - r.from_base_bytes
    r = verify_bundle(world["delta"].path, keys[1], base=BaseDir(world["base"]))
    assert r.base_checked and r.bytes == world["full"].manifest.total_size


def test_unpacking_a_delta_without_its_base_is_refused(world, keys, tmp_path) -> None:
    with pytest.raises(Error, match="this is a delta bundle") as e:
        unpack_bundle(world["delta"].path, keys[1], tmp_path / "d")
    assert "--base" in e.value.hint
    assert not (tmp_path / "d").exists() and os.listdir(tmp_path) == []


def test_another_base_is_refused_before_anything_is_read(world, keys, tmp_path) -> None:
    unpack_bundle(world["full"].path, keys[1], tmp_path / "other")  # the new bundle itself is not the base
    with pytest.raises(Error, match="needs k8s 1.10.3 .* as its base, but .* is another bundle"):
        unpack_bundle(world["delta"].path, keys[1], tmp_path / "d", base=BaseDir(tmp_path / "other"))
    assert not (tmp_path / "d").exists()


def test_a_base_that_lacks_a_file_is_named_and_nothing_is_written(world, keys, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(world["base"], base)
    (base / layout.rpm_path("docker-ce-18.09.1-3.el7.x86_64.rpm")).unlink()
    with pytest.raises(Error, match="lacks 1 file") as e:
        unpack_bundle(world["delta"].path, keys[1], tmp_path / "d", base=BaseDir(base))
    assert e.value.details == [layout.rpm_path("docker-ce-18.09.1-3.el7.x86_64.rpm")]
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_a_changed_byte_in_the_base_fails_the_combination(world, keys, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(world["base"], base)
    layer = base / layout.image_blob(hashlib.sha256(SHARED_LAYER).hexdigest())
    data = bytearray(layer.read_bytes())
    data[1000] ^= 1
    layer.write_bytes(bytes(data))
    with pytest.raises(Error, match="is not the images/blobs/sha256/.* the signed manifest names"):
        unpack_bundle(world["delta"].path, keys[1], tmp_path / "d", base=BaseDir(base))
    with pytest.raises(Error, match="the signed manifest names"):
        verify_bundle(world["delta"].path, keys[1], base=BaseDir(base))
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_a_base_unpacked_without_its_manifest_is_used_by_path(world, keys, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(world["base"], base)
    (base / layout.MANIFEST).unlink()
    # by path only, the renamed etcd tarball is not found: named as lacking
    with pytest.raises(Error, match="lacks 1 file") as e:
        unpack_bundle(world["delta"].path, keys[1], tmp_path / "d", base=BaseDir(base))
    assert e.value.details == [layout.binary_path("etcd-v3.3.1-renamed.tar")]
    shutil.copy(base / layout.binary_path("etcd-v3.3.1-linux-amd64.tar"),
                base / layout.binary_path("etcd-v3.3.1-renamed.tar"))
    unpack_bundle(world["delta"].path, keys[1], tmp_path / "d", base=BaseDir(base))
    assert (tmp_path / "d" / layout.binary_path("etcd-v3.3.1-renamed.tar")).read_bytes() == b"etcd 3.3.1 " * 4000


def test_a_base_named_by_its_lock_only_is_matched_by_the_lock_digest(world, tmp_path) -> None:
    m = world["full"].manifest
    base = BaseDir(world["base"])
    base.check_is(Base("", "", "", "1" * 64))
    with pytest.raises(Error, match="built from the lock with sha256 3333"):
        base.check_is(Base("", "", "", "3" * 64))
    assert Delta(Base("", "", "", "1" * 64), ()).to_bytes()  # writable
    assert Delta.from_bytes(Delta(Base("k8s", "1.10.3", "", "1" * 64), ()).to_bytes(), m).base.manifest_sha256 == ""


@pytest.mark.parametrize("data, where", [
    (b"not json", "not valid JSON"),
    (b'{"format": 1, "base": {}, "from_base": []}', "base.name: missing"),
    (b'{"format": 2, "base": {"name": "", "version": "", "manifest_sha256": "", "lock_sha256": "' + b"1" * 64
     + b'"}, "from_base": []}', "format: unsupported 2"),
    (b'{"format": 1, "base": {"name": "", "version": "", "manifest_sha256": "x", "lock_sha256": "' + b"1" * 64
     + b'"}, "from_base": []}', "base.manifest_sha256: must be 64"),
    (b'{"format": 1, "base": {"name": "", "version": "", "manifest_sha256": "", "lock_sha256": "' + b"1" * 64
     + b'"}, "from_base": ["binaries/nope"]}', "from_base\\[0\\]: 'binaries/nope' is not a file of the signed"),
    (b'{"format": 1, "base": {"name": "", "version": "", "manifest_sha256": "", "lock_sha256": "' + b"1" * 64
     + b'"}, "from_base": [], "extra": 1}', "extra: unknown field"),
])
def test_delta_json_is_validated_strictly(world, data: bytes, where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        Delta.from_bytes(data, world["full"].manifest)


def test_delta_json_paths_are_sorted_and_unique(world) -> None:
    m: Manifest = world["full"].manifest
    paths = [f.path for f in m.files][:2]
    bad = Delta(Base("", "", "", "1" * 64), (paths[1], paths[0])).to_bytes()
    with pytest.raises(ValidationError, match="out of order or repeated"):
        Delta.from_bytes(bad, m)


def test_the_delta_file_name() -> None:
    assert layout.delta_filename("k8s", "1.10.4", "1.10.3") == "k8s-1.10.4.delta-from-1.10.3.bundle.tar.zst"
    with pytest.raises(Error, match="bad base version"):
        layout.delta_filename("k8s", "1.10.4", "../x")
