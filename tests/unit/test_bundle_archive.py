"""Writing, splitting, reading, unpacking and inspecting bundles (the happy paths and the writer's refusals)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from contract.bundle import (
    Entry,
    generate_keypair,
    inspect_bundle,
    layout,
    load_private_key,
    load_public_key,
    open_stream,
    read_manifest,
    unpack_bundle,
    verify_bundle,
    write_bundle,
)
from contract.bundle import contents as bc
from contract.errors import Error

CREATED = "2018-05-21T10:00:00Z"
COMPONENTS = (bc.Component(bc.ComponentKind.RPM, "docker-ce", "17.03.2.ce-1.el7.centos",
                                 (layout.rpm_path("docker-ce-17.03.2.ce-1.el7.centos.x86_64.rpm"),)),
              bc.Component(bc.ComponentKind.BINARY, "kubernetes-server", "1.10.3",
                                 (layout.binary_path("kubectl"), layout.binary_path("kubelet"))))
TRUST = (bc.TrustEntry(bc.SourceKind.RPM, "docker-ce", bc.Check.UNCHECKED, (), "gpgcheck: false"),
         bc.TrustEntry(bc.SourceKind.BINARY, "kubernetes-server", bc.Check.UPSTREAM_DIGEST))
SPEC = "a" * 64
LOCK = "b" * 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key_path, pub_path = generate_keypair(tmp_path_factory.mktemp("keys"))
    return load_private_key(key_path), load_public_key(pub_path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """Source files of every kind: bundle path -> (source, mode); kubelet is 5 MB of random bytes."""
    src = tmp_path_factory.mktemp("src")
    contents = {
        layout.binary_path("kubelet"): (os.urandom(5_000_000), 0o755),
        layout.binary_path("kubectl"): (b"\x7fELF" + b"kubectl" * 20000, 0o775),
        layout.rpm_path("docker-ce-17.03.2.ce-1.el7.centos.x86_64.rpm"): (b"rpm" * 5000, 0o644),
        layout.rpm_path("repodata/repomd.xml"): (b"<repomd/>\n", 0o644),
        layout.IMAGES_OCI_LAYOUT: (b'{"imageLayoutVersion": "1.0.0"}', 0o644),
        layout.IMAGES_INDEX: (b'{"manifests": []}', 0o644),
        layout.image_blob("c" * 64): (os.urandom(70_000), 0o644),
        layout.manifest_path("kube-dns.yaml"): (b"kind: Service\n", 0o644),
        layout.installer_path("k8s_offline-0.1.0-py3-none-any.whl"): (b"PK" + os.urandom(1000), 0o644),
        layout.LOCK: (b"lock: true\n", 0o644),
        layout.SBOM: (b"{}", 0o600),
        layout.binary_path("empty"): (b"", 0o644),
        "manifests/" + "n" * 120 + ".yaml": (b"long name\n", 0o644),
    }
    out = {}
    for i, (path, (data, mode)) in enumerate(contents.items()):
        source = src / f"file{i}"
        source.write_bytes(data)
        out[path] = (source, mode)
    return out


def entries_of(files) -> list[Entry]:
    out = []
    for path, (source, mode) in files.items():
        data = source.read_bytes()
        out.append(Entry(path, source, len(data), hashlib.sha256(data).hexdigest(), mode))
    return out


def build(out_dir, files, keys, **kwargs):
    kwargs.setdefault("created", CREATED)
    return write_bundle(out_dir, "k8s", "1.10.3", entries_of(files), keys[0], spec_sha256=SPEC,
                        lock_sha256=LOCK, components=COMPONENTS, trust=TRUST, options={"dns": "kube-dns"}, **kwargs)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def unpacked(root: Path, manifest, signatures=(layout.SIGNATURE,)) -> dict[str, tuple[bytes, int]]:
    """The unpacked files without the head unpack keeps beside them: the signed manifest bytes and its
    signature member(s), exactly those."""
    got = tree(root)
    assert got.pop(layout.MANIFEST)[0] == manifest.to_bytes()
    for name in signatures:
        assert len(got.pop(name)[0]) > 0, name
    return got


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory, files, keys):
    return build(tmp_path_factory.mktemp("out"), files, keys)


@pytest.fixture(scope="module")
def split(tmp_path_factory, files, keys):
    return build(tmp_path_factory.mktemp("split"), files, keys, split_size="64KiB")


def test_round_trip(unsplit, files, keys, tmp_path) -> None:
    assert unsplit.path.name == "k8s-1.10.3.bundle.tar.zst"
    assert unsplit.index is None and unsplit.parts == ()
    assert sorted(os.listdir(unsplit.path.parent)) == [unsplit.path.name]  # no temp files left
    assert unsplit.size == unsplit.path.stat().st_size
    assert unsplit.sha256 == hashlib.sha256(unsplit.path.read_bytes()).hexdigest()

    report = verify_bundle(unsplit.path, keys[1])
    assert (report.name, report.version, report.files) == ("k8s", "1.10.3", len(files))
    assert report.bytes == sum(s.stat().st_size for s, _ in files.values())
    assert report.fingerprint == unsplit.fingerprint and report.fingerprint.startswith("SHA256:")

    dest = tmp_path / "dest"
    assert unpack_bundle(unsplit.path, keys[1], dest) == report
    got = unpacked(dest, unsplit.manifest)
    assert set(got) == set(files)
    for path, (source, mode) in files.items():
        assert got[path][0] == source.read_bytes(), path
        assert got[path][1] == mode & 0o755, path
    assert sorted(os.listdir(tmp_path)) == ["dest"]


def test_members_are_manifest_signature_then_sorted_files(unsplit, files) -> None:
    raw = zstandard.ZstdDecompressor().stream_reader(unsplit.path.open("rb"), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == [layout.MANIFEST, layout.SIGNATURE]
    # random bytes of 64 KiB or more: in the second, fast frame; each frame in path order
    incompressible = sorted({layout.binary_path("kubelet"), layout.image_blob("c" * 64)})
    assert names[2:] == sorted(set(files) - set(incompressible)) + incompressible
    assert all(m.isreg() and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mtime for m in members} == {1526896800}  # CREATED


def test_output_is_deterministic(unsplit, files, keys, tmp_path) -> None:
    again = build(tmp_path, files, keys)
    assert again.path.read_bytes() == unsplit.path.read_bytes()


def test_split_parts_concatenate_to_the_unsplit_bundle(split, unsplit) -> None:
    assert split.path.name == "k8s-1.10.3.bundle.tar.zst.parts.json" and split.index == split.path
    assert len(split.parts) > 3
    assert all(p.stat().st_size <= 64 * 1024 for p in split.parts)
    assert not (split.path.parent / "k8s-1.10.3.bundle.tar.zst").exists()
    assert b"".join(p.read_bytes() for p in split.parts) == unsplit.path.read_bytes()
    assert (split.size, split.sha256) == (unsplit.size, unsplit.sha256)
    names = sorted(os.listdir(split.path.parent))
    assert names == sorted([split.path.name, split.path.name + ".sig"] + [p.name for p in split.parts])


@pytest.mark.parametrize("which", ["dir", "index", "first", "middle", "last", "bundle-name"])
def test_split_verifies_from_any_handle(split, keys, which) -> None:
    handle = {
        "dir": split.path.parent,
        "index": split.path,
        "first": split.parts[0],
        "middle": split.parts[len(split.parts) // 2],
        "last": split.parts[-1],
        "bundle-name": split.path.parent / "k8s-1.10.3.bundle.tar.zst",
    }[which]
    assert verify_bundle(handle, keys[1]).files == len(split.manifest.files)


def test_split_unpacks(split, files, keys, tmp_path) -> None:
    unpack_bundle(split.parts[1], keys[1], tmp_path / "d")
    assert {p: c for p, (c, _) in unpacked(tmp_path / "d", split.manifest).items()} == {
        p: s.read_bytes() for p, (s, _) in files.items()
    }


def test_open_stream_reads_the_whole_compressed_stream(split, unsplit) -> None:
    for handle in (split.path.parent, unsplit.path):
        stream = open_stream(handle)
        chunks = []
        try:
            while chunk := stream.read(10_000):
                chunks.append(chunk)
        finally:
            stream.close()
        data = b"".join(chunks)
        assert data == unsplit.path.read_bytes()


def test_rebuilding_unsplit_removes_old_parts_and_vice_versa(files, keys, tmp_path) -> None:
    build(tmp_path, files, keys, split_size="16KiB")
    build(tmp_path, files, keys)
    assert os.listdir(tmp_path) == ["k8s-1.10.3.bundle.tar.zst"]
    result = build(tmp_path, files, keys, split_size="64KiB")
    assert "k8s-1.10.3.bundle.tar.zst" not in os.listdir(tmp_path)
    assert len(os.listdir(tmp_path)) == len(result.parts) + 2  # the index and its Ed25519 signature


def test_read_manifest_and_inspect(unsplit, split, keys) -> None:
    manifest, data, sig = read_manifest(unsplit.path, keys[1])
    assert manifest == unsplit.manifest and data == manifest.to_bytes() and len(sig) == 64
    for handle in (unsplit.path, split.parts[0]):
        info = inspect_bundle(handle, keys[1])
        assert (info["name"], info["version"], info["created"]) == ("k8s", "1.10.3", CREATED)
        assert info["format_version"] == 2 and info["options"] == {"dns": "kube-dns"}
        assert info["components"] == [
            {"kind": "binary", "name": "kubernetes-server", "version": "1.10.3",
             "paths": [layout.binary_path("kubectl"), layout.binary_path("kubelet")]},
            {"kind": "rpm", "name": "docker-ce", "version": "17.03.2.ce-1.el7.centos",
             "paths": [layout.rpm_path("docker-ce-17.03.2.ce-1.el7.centos.x86_64.rpm")]}]
        assert [(t["kind"], t["name"], t["check"]) for t in info["trust"]] == [
            ("binary", "kubernetes-server", "upstream-digest"), ("rpm", "docker-ce", "unchecked")]
        assert info["warnings"] == [f"{bc.FINDING_TEXT[bc.Check.UNCHECKED]}: rpm/docker-ce"]
        assert info["notes"] == [] and "legacy_components" not in info
        assert info["kinds"]["binary"]["files"] == 3
        assert info["kinds"]["binary"]["bytes"] == 5_000_000 + 4 + 7 * 20000
        assert info["kinds"]["rpm"]["files"] == 2
        assert info["kinds"]["image"]["files"] == 3
        assert info["kinds"]["manifest"]["files"] == 2
        assert info["kinds"]["installer"]["files"] == 1
        assert info["kinds"]["meta"]["files"] == 2
        assert info["signature"]["fingerprint"] == unsplit.fingerprint
    assert "signature" not in inspect_bundle(split.path)
    assert len(inspect_bundle(split.path)["parts"]) == len(split.parts)


def test_progress_reports_every_byte(files, keys, unsplit, tmp_path) -> None:
    seen = []
    build(tmp_path, files, keys, progress=lambda done, total: seen.append((done, total)))
    total = unsplit.manifest.total_size
    assert seen[-1] == (total, total)
    seen.clear()
    verify_bundle(unsplit.path, keys[1], progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, total) and seen[-1] == (total, total)


@pytest.mark.parametrize("change", ["content", "grown", "shrunk"])
def test_writer_refuses_a_source_that_changed(files, keys, tmp_path, change) -> None:
    source = tmp_path / "changing"
    source.write_bytes(b"x" * 100_000)
    entries = entries_of(files) + [Entry("binaries/changing", source, 100_000,
                                         hashlib.sha256(b"x" * 100_000).hexdigest())]
    source.write_bytes({"content": b"y" * 100_000, "grown": b"x" * 100_001, "shrunk": b"x" * 99_999}[change])
    out = tmp_path / "out"
    for split_size in (None, "16KiB"):
        with pytest.raises(Error, match="changed") as e:
            write_bundle(out, "k8s", "1.10.3", entries, keys[0], spec_sha256=SPEC, lock_sha256=LOCK,
                         components={}, split_size=split_size)
        assert "binaries/changing" in e.value.message
        assert os.listdir(out) == []


def test_writer_refuses_bad_entries(files, keys, tmp_path) -> None:
    source = next(iter(files.values()))[0]
    for entry in (Entry("../evil", source, 1, "0" * 64), Entry("/abs", source, 1, "0" * 64),
                  Entry("binaries/x", source, 1, "0" * 64, 0o4755), Entry(layout.MANIFEST, source, 1, "0" * 64)):
        with pytest.raises(Error, match="manifest.json"):
            write_bundle(tmp_path, "k8s", "1", [entry], keys[0], spec_sha256=SPEC, lock_sha256=LOCK,
                         components={})
    assert os.listdir(tmp_path) == []


def test_unpack_refuses_a_non_empty_dest(unsplit, keys, tmp_path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(Error, match="not empty") as e:
        unpack_bundle(unsplit.path, keys[1], dest)
    assert "empty or new directory" in e.value.hint
    assert os.listdir(dest) == ["keep"] and sorted(os.listdir(tmp_path)) == ["dest"]


def test_unpack_replaces_an_empty_dest(unsplit, keys, tmp_path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack_bundle(unsplit.path, keys[1], dest)
    assert (dest / "binaries" / "kubelet").is_file()
    assert stat.S_IMODE((dest / "binaries").stat().st_mode) == 0o755
    assert sorted(os.listdir(tmp_path)) == ["dest"]


def test_directory_with_two_bundles_is_ambiguous(unsplit, tmp_path) -> None:
    for name in ("a-1.bundle.tar.zst", "b-1.bundle.tar.zst"):
        (tmp_path / name).write_bytes(unsplit.path.read_bytes())
    with pytest.raises(Error, match="exactly one bundle"):
        open_stream(tmp_path)


def test_missing_bundle(tmp_path, keys) -> None:
    with pytest.raises(Error, match="does not exist"):
        verify_bundle(tmp_path / "nope.bundle.tar.zst", keys[1])


def test_manifest_names_its_signer_for_inspect(tmp_path):
    """inspect shows the signer's fingerprint without the public key; the signature still decides."""
    from contract.bundle import (
        Entry,
        fingerprint,
        generate_keypair,
        inspect_bundle,
        load_private_key,
        write_bundle,
    )

    key_path, _ = generate_keypair(tmp_path / "k")
    key = load_private_key(key_path)
    src = tmp_path / "f"
    src.write_bytes(b"x")
    import hashlib

    res = write_bundle(tmp_path / "out", "n", "1", [Entry("binaries/f", src, 1, hashlib.sha256(b"x").hexdigest())],
                       key, spec_sha256="0" * 64, lock_sha256="0" * 64, components={})
    assert res.manifest.signer == fingerprint(key.public_key())
    assert inspect_bundle(res.path)["signer"] == fingerprint(key.public_key())


def _frames(path: Path) -> list[bytes]:
    """The decompressed content of each zstd frame of a bundle file, in order."""
    raw, out = path.read_bytes(), []
    while raw:
        obj = zstandard.ZstdDecompressor().decompressobj()
        out.append(obj.decompress(raw))
        raw = obj.unused_data
    return out


def test_compressible_and_compressed_members_go_into_their_own_frames(tmp_path, keys):
    src = tmp_path / "src"
    src.mkdir()
    layer = src / "layer"
    layer.write_bytes(b"\x1f\x8b" + os.urandom(200_000))  # a gzip'd image layer
    exe = src / "etcd"
    exe.write_bytes(b"\x7fELF" + b"etcd" * 100_000)
    small_gz = src / "small"
    small_gz.write_bytes(b"\x1f\x8b" + b"x" * 100)  # small: kept with the compressible ones
    ents = [Entry(layout.image_blob("d" * 64), layer, layer.stat().st_size, _sha(layer)),
            Entry(layout.binary_path("etcd"), exe, exe.stat().st_size, _sha(exe), 0o755),
            Entry(layout.binary_path("small.gz"), small_gz, small_gz.stat().st_size, _sha(small_gz))]
    res = write_bundle(tmp_path / "out", "k8s", "1.10.3", ents, keys[0], spec_sha256=SPEC, lock_sha256=LOCK,
                       components={}, created=CREATED)
    frames = _frames(res.path)
    assert len(frames) == 2
    names = [[m.name for m in tarfile.open(fileobj=io.BytesIO(f + b"\0" * 1024)).getmembers()] for f in frames]
    assert names[0] == [layout.MANIFEST, layout.SIGNATURE, "binaries/etcd", "binaries/small.gz"]
    assert names[1] == [layout.image_blob("d" * 64)]
    assert verify_bundle(res.path, keys[1]).files == 3
    unpack_bundle(res.path, keys[1], tmp_path / "site")
    assert (tmp_path / "site" / "binaries" / "etcd").read_bytes() == exe.read_bytes()
    # the whole stream is still one tar any zstd-aware tar reads
    with tarfile.open(fileobj=io.BytesIO(b"".join(frames))) as t:
        assert len(t.getnames()) == 5


def test_truncation_exactly_between_frames_is_refused(tmp_path, keys):
    src = tmp_path / "layer"
    src.write_bytes(b"\x1f\x8b" + os.urandom(100_000))
    res = write_bundle(tmp_path / "out", "k8s", "1", [Entry(layout.image_blob("e" * 64), src, 100_002, _sha(src))],
                       keys[0], spec_sha256=SPEC, lock_sha256=LOCK, components={}, created=CREATED)
    raw = res.path.read_bytes()
    first = zstandard.ZstdDecompressor().decompressobj()
    first.decompress(raw)
    cut = tmp_path / "cut.bundle.tar.zst"
    cut.write_bytes(raw[: len(raw) - len(first.unused_data)])
    with pytest.raises(Error) as e:
        verify_bundle(cut, keys[1])
    assert "truncated" in e.value.render() or "missing" in e.value.render()


def test_a_frame_appended_after_the_end_is_refused(tmp_path, keys, files):
    res = build(tmp_path / "out", files, keys)
    joined = tmp_path / "joined.bundle.tar.zst"
    joined.write_bytes(res.path.read_bytes() + zstandard.ZstdCompressor().compress(b"evil" * 1000))
    with pytest.raises(Error) as e:
        verify_bundle(joined, keys[1])
    assert "trailing garbage" in e.value.render()


@pytest.mark.parametrize("level", [0, 23])
def test_compression_level_out_of_range_is_refused_before_writing(tmp_path, keys, files, level):
    with pytest.raises(Error) as e:
        build(tmp_path / "out", files, keys, level=level)
    assert "compression level" in e.value.message and "1 (fastest) to 22" in e.value.render()
    assert not (tmp_path / "out").exists()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_incompressible_data_without_a_known_magic_goes_to_the_fast_frame(tmp_path, keys):
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(300_000))  # e.g. an encrypted or unknown compressed format
    res = write_bundle(tmp_path / "out", "k8s", "1", [Entry("binaries/noise", noise, 300_000, _sha(noise))],
                       keys[0], spec_sha256=SPEC, lock_sha256=LOCK, components={}, created=CREATED)
    frames = _frames(res.path)
    assert len(frames) == 2 and b"binaries/noise" in frames[1][:512]


# ---- the second signature (ECDSA P-256, for openssl 1.0.2) -------------------------------------------


@pytest.fixture(scope="module")
def dual_keys(tmp_path_factory):
    """(Ed25519 private, Ed25519 public, P-256 private, P-256 public) as `bundler keygen` writes them."""
    from contract.bundle import generate_keys, load_p256_private_key

    k = generate_keys(tmp_path_factory.mktemp("dual-keys"))
    return (load_private_key(k.key), load_public_key(k.pub), load_p256_private_key(k.p256_key),
            load_public_key(k.p256_pub))


@pytest.fixture(scope="module")
def dual(tmp_path_factory, files, dual_keys):
    return build(tmp_path_factory.mktemp("dual"), files, dual_keys, p256_key=dual_keys[2])


def test_dual_signed_members_are_manifest_both_signatures_then_files(dual, files, dual_keys) -> None:
    from contract.bundle import fingerprint, sign_p256

    raw = zstandard.ZstdDecompressor().stream_reader(dual.path.open("rb"), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        sig_p256 = tar.extractfile(layout.SIGNATURE_P256).read()
        manifest_bytes = tar.extractfile(layout.MANIFEST).read()
    assert names[:3] == [layout.MANIFEST, layout.SIGNATURE, layout.SIGNATURE_P256]
    assert sorted(names[3:]) == sorted(files)
    assert sig_p256 == sign_p256(dual_keys[2], manifest_bytes)  # DER, deterministic, over the exact bytes
    assert dual.fingerprint_p256 == fingerprint(dual_keys[3])
    assert dual.manifest.p256_signer().public_numbers() == dual_keys[3].public_numbers()


def test_dual_signed_bundle_verifies_and_unpacks_with_either_key(dual, files, dual_keys, tmp_path) -> None:
    from contract.bundle import fingerprint

    ed = verify_bundle(dual.path, dual_keys[1])
    assert ed.fingerprint == dual.fingerprint and ed.key_type == "Ed25519"
    assert ed.checked == (layout.SIGNATURE, layout.SIGNATURE_P256) and ed.not_checked == ()
    p256 = verify_bundle(dual.path, dual_keys[3])
    assert p256.fingerprint == fingerprint(dual_keys[3]) and p256.key_type == "P-256"
    assert p256.checked == (layout.SIGNATURE_P256,) and p256.not_checked == (layout.SIGNATURE,)
    assert (p256.name, p256.files, p256.bytes) == (ed.name, ed.files, ed.bytes) == ("k8s", len(files), ed.bytes)
    assert unpack_bundle(dual.path, dual_keys[3], tmp_path / "dest") == p256
    assert set(unpacked(tmp_path / "dest", dual.manifest, (layout.SIGNATURE, layout.SIGNATURE_P256))) == set(files)
    manifest, data, sig = read_manifest(dual.path, dual_keys[3])
    assert manifest == dual.manifest and len(sig) == 64


def test_dual_signed_output_is_deterministic(dual, files, dual_keys, tmp_path) -> None:
    again = build(tmp_path, files, dual_keys, p256_key=dual_keys[2])
    assert again.sha256 == dual.sha256


def test_inspect_names_both_signers(dual, unsplit, keys, dual_keys) -> None:
    from contract.bundle import fingerprint

    info = inspect_bundle(dual.path)
    assert info["signer"] == dual.fingerprint and info["signer_p256"] == fingerprint(dual_keys[3])
    assert info["signatures"] == [layout.SIGNATURE, layout.SIGNATURE_P256] and "signature" not in info
    checked = inspect_bundle(dual.path, dual_keys[3])["signature"]
    assert checked == {"verified": True, "fingerprint": fingerprint(dual_keys[3]), "key_type": "P-256",
                       "checked": [layout.SIGNATURE_P256], "not_checked": [layout.SIGNATURE]}
    assert inspect_bundle(dual.path, dual_keys[1])["signature"]["checked"] == [layout.SIGNATURE,
                                                                               layout.SIGNATURE_P256]
    old = inspect_bundle(unsplit.path, keys[1])
    assert old["signer_p256"] is None and old["signatures"] == [layout.SIGNATURE]


def test_p256_key_for_a_bundle_without_the_second_signature(unsplit, dual_keys) -> None:
    with pytest.raises(Error) as e:
        verify_bundle(unsplit.path, dual_keys[3])
    assert "carries only an Ed25519 signature" in e.value.message
    assert "bundle.pub" in e.value.hint
    with pytest.raises(Error, match="only an Ed25519 signature"):
        inspect_bundle(unsplit.path, dual_keys[3])


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def test_a_tar_mostly_of_compressed_members_goes_to_the_fast_frame(tmp_path, keys):
    # Harbor's offline installer: scripts and configuration around one large gzip'd image tarball
    harbor = _tar(tmp_path / "harbor.tar", [("harbor/install.sh", b"#!/bin/sh\n" * 20_000),
                                            ("harbor/harbor.v1.4.0.tar.gz", b"\x1f\x8b" + os.urandom(400_000))])
    # a release tarball of executables (and a small gzip'd member): compressed hard
    server = _tar(tmp_path / "server.tar", [("kubernetes/server/bin/kubelet", b"\x7fELF" + b"kubelet" * 60_000),
                                            ("kubernetes/kubernetes-src.tar.gz", b"\x1f\x8b" + os.urandom(70_000))])
    ents = [Entry(layout.binary_path(p.name), p, p.stat().st_size, _sha(p)) for p in (harbor, server)]
    res = write_bundle(tmp_path / "out", "k8s", "1", ents, keys[0], spec_sha256=SPEC, lock_sha256=LOCK,
                       components={}, created=CREATED)
    frames = _frames(res.path)
    names = [[m.name for m in tarfile.open(fileobj=io.BytesIO(f + b"\0" * 1024)).getmembers()] for f in frames]
    assert names == [[layout.MANIFEST, layout.SIGNATURE, "binaries/server.tar"], ["binaries/harbor.tar"]]
    assert verify_bundle(res.path, keys[1]).files == 2


def test_a_file_that_only_looks_like_a_tar_goes_with_the_compressible_ones(tmp_path, keys):
    fake = tmp_path / "fake.tar"
    head = bytearray(b"x" * 512)
    head[257:262] = b"ustar"  # a header whose checksum is wrong: not a tar after all
    fake.write_bytes(bytes(head) + b"text " * 30_000)
    res = write_bundle(tmp_path / "out", "k8s", "1", [Entry("binaries/fake.tar", fake, fake.stat().st_size,
                                                            _sha(fake))],
                       keys[0], spec_sha256=SPEC, lock_sha256=LOCK, components={}, created=CREATED)
    assert len(_frames(res.path)) == 1
