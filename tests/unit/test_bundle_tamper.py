"""Every way a bundle can be damaged or forged is refused, and a refused unpack leaves dest as it was."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
import zstandard

from contract.bundle import (
    Entry,
    generate_keypair,
    generate_keys,
    layout,
    load_p256_private_key,
    load_private_key,
    load_public_key,
    read_manifest,
    sign,
    sign_p256,
    signature,
    unpack_bundle,
    verify_bundle,
    write_bundle,
)
from contract.bundle.manifest import FileEntry, Manifest
from contract.errors import Error
from tests.typed_contents import typed

CREATED = "2018-05-21T10:00:00Z"
KUBELET = layout.binary_path("kubelet")
RPM = layout.rpm_path("etcd-3.2.18-1.el7.x86_64.rpm")
BLOB = layout.image_blob("d" * 64)
META = layout.LOCK
CONTENTS = {
    KUBELET: (b"\x7fELF" + os.urandom(100_000), 0o755),  # incompressible, so a split has several parts
    RPM: (b"\xed\xab\xee\xdb" + b"rpm-payload" * 3000, 0o644),
    BLOB: (b"layer" * 5000, 0o644),
    META: (b"kubernetes: 1.10.3\n", 0o644),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key_path, pub_path = generate_keypair(tmp_path_factory.mktemp("keys"))
    return load_private_key(key_path), load_public_key(pub_path)


def _entries(src: Path, contents) -> list[Entry]:
    out = []
    for i, (path, (data, mode)) in enumerate(sorted(contents.items())):
        source = src / f"f{i}"
        source.write_bytes(data)
        out.append(Entry(path, source, len(data), hashlib.sha256(data).hexdigest(), mode))
    return out


def _write(out: Path, keys, contents=CONTENTS, version="1.10.3", **kwargs):
    src = out / "src"
    src.mkdir(parents=True)
    return write_bundle(out / "dist", "k8s", version, _entries(src, contents), keys[0], spec_sha256="a" * 64,
                        lock_sha256="b" * 64, **typed({"binary/kubernetes-server": "1.10.3"}, KUBELET),
                        created=CREATED, **kwargs)


@pytest.fixture(scope="module")
def good(tmp_path_factory, keys) -> Path:
    return _write(tmp_path_factory.mktemp("good"), keys).path


@pytest.fixture()
def split(tmp_path, keys):
    return _write(tmp_path / "split", keys, split_size="16KiB")


def tar_of(bundle: Path) -> bytes:
    with bundle.open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def zst(path: Path, tar_bytes: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(tar_bytes))
    return path


def data_offset(tar_bytes: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return tar.getmember(name).offset_data


def rejected(bundle: Path, public_key, tmp_path: Path, *needles: str) -> str:
    """Assert verify and unpack both refuse the bundle, naming `needles`, and leave dest untouched."""
    with pytest.raises(Error) as e:
        verify_bundle(bundle, public_key)
    text = e.value.render()
    for needle in needles:
        assert needle in text, text
    site = tmp_path / "site"
    site.mkdir()
    (site / "empty").mkdir()
    for dest in (site / "empty", site / "new"):
        with pytest.raises(Error) as again:
            unpack_bundle(bundle, public_key, dest)
        assert again.value.message == e.value.message
    assert sorted(os.listdir(site)) == ["empty"]  # no temp dir, no "new"
    assert os.listdir(site / "empty") == []
    return text


# ---- flipped bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("member", [KUBELET, RPM, BLOB, META])
def test_flipped_byte_in_a_file_of_each_kind(good, keys, tmp_path, member) -> None:
    data = bytearray(tar_of(good))
    data[data_offset(bytes(data), member) + 7] ^= 0x01
    text = rejected(zst(tmp_path / "bad.bundle.tar.zst", bytes(data)), keys[1], tmp_path, member, "sha256")
    assert layout.kind_of(member) in ("binary", "rpm", "image", "meta")
    assert "wrong sha256" in text


def test_flipped_byte_in_the_manifest_breaks_the_signature(good, keys, tmp_path) -> None:
    data = bytearray(tar_of(good))
    at = data_offset(bytes(data), layout.MANIFEST) + bytes(data).index(b'"name"') % 512
    data[at] ^= 0x01
    rejected(zst(tmp_path / "bad.bundle.tar.zst", bytes(data)), keys[1], tmp_path, "signature", "does not verify")


def test_flipped_byte_in_the_compressed_stream(good, keys, tmp_path) -> None:
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.bundle.tar.zst"
    bad.write_bytes(bytes(data))
    text = rejected(bad, keys[1], tmp_path)
    assert "corrupt" in text or "wrong sha256" in text


# ---- truncation and trailing garbage ------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.5, 0.9, 1, 4])
def test_truncated_bundle(good, keys, tmp_path, cut) -> None:
    data = good.read_bytes()
    keep = int(len(data) * cut) if isinstance(cut, float) else len(data) - cut
    bad = tmp_path / "bad.bundle.tar.zst"
    bad.write_bytes(data[:keep])
    rejected(bad, keys[1], tmp_path, "truncated")


def test_tar_truncated_before_its_end_marker(good, keys, tmp_path) -> None:
    data = tar_of(good)
    end = data_offset(data, META) + 512
    rejected(zst(tmp_path / "bad.bundle.tar.zst", data[:end]), keys[1], tmp_path, "truncated")


@pytest.mark.parametrize("garbage", [b"x", b"garbage" * 100, None])
def test_trailing_garbage_after_the_compressed_stream(good, keys, tmp_path, garbage: Optional[bytes]) -> None:
    data = good.read_bytes()
    bad = tmp_path / "bad.bundle.tar.zst"
    bad.write_bytes(data + (garbage if garbage is not None else data))  # None: the whole bundle twice
    rejected(bad, keys[1], tmp_path, "trailing garbage")


def test_trailing_garbage_inside_the_tar(good, keys, tmp_path) -> None:
    data = tar_of(good) + b"\0" * 512 + b"evil" + b"\0" * 508
    rejected(zst(tmp_path / "bad.bundle.tar.zst", data), keys[1], tmp_path, "trailing garbage")


def test_zero_padding_after_the_end_marker_is_fine(good, keys, tmp_path) -> None:
    data = tar_of(good) + b"\0" * 8192  # as GNU tar pads to a 10 KiB record
    verify_bundle(zst(tmp_path / "padded.bundle.tar.zst", data), keys[1])


def test_not_a_bundle(keys, tmp_path) -> None:
    bad = tmp_path / "x.bundle.tar.zst"
    bad.write_bytes(b"PK\x03\x04 this is a zip file" * 10)
    rejected(bad, keys[1], tmp_path, "zstd")


# ---- split parts --------------------------------------------------------------------------------


def test_dropped_part(split, keys, tmp_path) -> None:
    split.parts[1].unlink()
    rejected(split.parts[0], keys[1], tmp_path, split.parts[1].name, "missing")


def test_duplicated_part(split, keys, tmp_path) -> None:
    shutil.copyfile(split.parts[0], split.parts[1])
    rejected(split.path, keys[1], tmp_path, split.parts[1].name, "holds the content of part 1")


def test_parts_with_swapped_contents(split, keys, tmp_path) -> None:
    a, b = split.parts[1].read_bytes(), split.parts[2].read_bytes()
    split.parts[1].write_bytes(b)
    split.parts[2].write_bytes(a)
    rejected(split.parts[2], keys[1], tmp_path, split.parts[1].name, "holds the content of part 3")


def test_truncated_part(split, keys, tmp_path) -> None:
    last = split.parts[-1]
    last.write_bytes(last.read_bytes()[:-1])
    rejected(split.path.parent, keys[1], tmp_path, last.name, "bytes")


def test_flipped_byte_in_a_part(split, keys, tmp_path) -> None:
    part = split.parts[-1]
    data = bytearray(part.read_bytes())
    data[-10] ^= 0x01
    part.write_bytes(bytes(data))
    rejected(split.parts[0], keys[1], tmp_path, part.name)


def test_missing_parts_index(split, keys, tmp_path) -> None:
    split.path.unlink()
    rejected(split.parts[0], keys[1], tmp_path, split.path.name, "does not exist")


def test_index_naming_a_part_outside_its_directory(split, keys, tmp_path) -> None:
    split.path.write_text(split.path.read_text().replace(split.parts[0].name, "../../etc/passwd"))
    rejected(split.path, keys[1], tmp_path, "malformed")


# ---- crafted archives, signed with the test key so the structural check is what fails ------------


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = 1, 3
    return info, None


def signed_head(key, contents, version="1.10.3") -> list:
    manifest = Manifest(
        format_version=2, name="k8s", version=version, created=CREATED, spec_sha256="a" * 64,
        lock_sha256="b" * 64,
        files=tuple(FileEntry(p, len(d), hashlib.sha256(d).hexdigest(), m) for p, (d, m) in sorted(contents.items())),
    )
    data = manifest.to_bytes()
    return [reg(layout.MANIFEST, data), reg(layout.SIGNATURE, sign(key, data))]


def files_of(contents) -> list:
    return [reg(p, d) for p, (d, _) in sorted(contents.items())]


def craft(path: Path, members) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return zst(path, buf.getvalue())


def test_crafted_good_bundle_verifies(keys, tmp_path) -> None:
    """The crafting helpers make valid bundles, so each failure below is the one change it makes."""
    bundle = craft(tmp_path / "ok.bundle.tar.zst", signed_head(keys[0], CONTENTS) + files_of(CONTENTS))
    assert verify_bundle(bundle, keys[1]).files == len(CONTENTS)


def test_extra_member_not_in_the_manifest(keys, tmp_path) -> None:
    members = signed_head(keys[0], CONTENTS) + files_of(CONTENTS) + [reg("binaries/extra", b"surprise")]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, "binaries/extra", "not in the signed")


def test_missing_member(keys, tmp_path) -> None:
    members = signed_head(keys[0], CONTENTS) + [m for m in files_of(CONTENTS) if m[0].name != RPM]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, RPM, "missing")


def test_duplicated_member(keys, tmp_path) -> None:
    members = signed_head(keys[0], CONTENTS) + files_of(CONTENTS) + [reg(KUBELET, CONTENTS[KUBELET][0])]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, KUBELET, "more than once")


def test_second_manifest_member(keys, tmp_path) -> None:
    head = signed_head(keys[0], CONTENTS)
    members = head + files_of(CONTENTS) + [head[0]]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, layout.MANIFEST, "more than once")


def test_member_with_the_wrong_size(keys, tmp_path) -> None:
    members = signed_head(keys[0], CONTENTS) + [
        reg(p, d + b"!" if p == BLOB else d) for p, (d, _) in sorted(CONTENTS.items())
    ]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, BLOB, "bytes")


@pytest.mark.parametrize("name, why", [("../evil", "traversal"), ("binaries/../../evil", "traversal"),
                                       ("/etc/cron.d/evil", "absolute"), ("binaries//kubelet", "bad path")])
def test_unsafe_paths(keys, tmp_path, name, why) -> None:
    contents = {**CONTENTS, name: (b"evil", 0o644)}
    members = signed_head(keys[0], CONTENTS) + files_of(CONTENTS) + [reg(name, b"evil")]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, name, why)
    assert contents  # the manifest cannot even list such a path: see test_bundle_manifest
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("kind, why, linkname", [
    (tarfile.SYMTYPE, "symlink", "/etc/passwd"),
    (tarfile.LNKTYPE, "hardlink", layout.LOCK),
    (tarfile.CHRTYPE, "character device", ""),
    (tarfile.BLKTYPE, "block device", ""),
    (tarfile.FIFOTYPE, "fifo", ""),
    (tarfile.DIRTYPE, "directory", ""),
])
def test_links_devices_and_other_non_files(keys, tmp_path, kind, why, linkname) -> None:
    # The member takes the place of a file the signed manifest lists, so only its type is wrong.
    members = signed_head(keys[0], CONTENTS) + [
        special(p, kind, linkname) if p == KUBELET else reg(p, d) for p, (d, _) in sorted(CONTENTS.items())
    ]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, KUBELET, why)


def test_manifest_not_first(keys, tmp_path) -> None:
    head = signed_head(keys[0], CONTENTS)
    files = files_of(CONTENTS)
    members = [files[0]] + head + files[1:]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, files[0][0].name, "first member")


def test_signature_not_second(keys, tmp_path) -> None:
    head = signed_head(keys[0], CONTENTS)
    files = files_of(CONTENTS)
    members = [head[0]] + files + [head[1]]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, "second member", "manifest.sig")


def test_manifest_and_signature_from_another_bundle(keys, tmp_path) -> None:
    other = {**CONTENTS, KUBELET: (b"older kubelet", 0o755)}
    members = signed_head(keys[0], other, version="1.10.2") + files_of(CONTENTS)
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, KUBELET)


def test_manifest_and_signature_spliced_from_another_real_bundle(good, keys, tmp_path) -> None:
    other = _write(tmp_path / "other", keys, contents={**CONTENTS, BLOB: (b"other layer", 0o644)}).path
    mine, theirs = tar_of(good), tar_of(other)
    head_end = data_offset(theirs, layout.SIGNATURE) + 512
    mine_files = mine[data_offset(mine, layout.SIGNATURE) + 512:]
    spliced = zst(tmp_path / "spliced.bundle.tar.zst", theirs[:head_end] + mine_files)
    rejected(spliced, keys[1], tmp_path, BLOB, "bytes")


def test_wrong_public_key(good, tmp_path) -> None:
    other = load_public_key(generate_keypair(tmp_path / "other")[1])
    rejected(good, other, tmp_path, "does not verify")
    with pytest.raises(Error, match="does not verify"):
        read_manifest(good, other)


def test_unsigned_manifest_with_garbage_signature(keys, tmp_path) -> None:
    head = signed_head(keys[0], CONTENTS)
    members = [head[0], reg(layout.SIGNATURE, b"\0" * 64)] + files_of(CONTENTS)
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, "does not verify")


def test_signed_but_invalid_manifest(keys, tmp_path) -> None:
    data = b'{"format_version": 1}'
    members = [reg(layout.MANIFEST, data), reg(layout.SIGNATURE, sign(keys[0], data))] + files_of(CONTENTS)
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), keys[1], tmp_path, "manifest.json", "missing")


def test_gnu_long_name_members_are_refused(keys, tmp_path) -> None:
    name = "manifests/" + "x" * 150
    contents = {**CONTENTS, name: (b"long", 0o644)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in signed_head(keys[0], contents) + files_of(contents):
            tar.addfile(info, io.BytesIO(data))
    rejected(zst(tmp_path / "b.bundle.tar.zst", buf.getvalue()), keys[1], tmp_path, "GNU long name")


# ---- the second signature: manifest.sig.p256 (ECDSA P-256), only ever the third member -----------


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """Keys as `bundler keygen` writes them, another P-256 key, and a real bundle signed with both keys."""
    d = tmp_path_factory.mktemp("dual")
    mine, other = generate_keys(d / "keys"), generate_keys(d / "other")
    ns = SimpleNamespace(
        ed=(load_private_key(mine.key), load_public_key(mine.pub)),
        p256=(load_p256_private_key(mine.p256_key), load_public_key(mine.p256_pub)),
        other=(load_p256_private_key(other.p256_key), load_public_key(other.p256_pub)),
    )
    ns.good = _write(d / "good", ns.ed, p256_key=ns.p256[0]).path
    return ns


def dual_head(dual, contents=CONTENTS, *, named=True, signer=None) -> list:
    """manifest.json naming dual's P-256 key (unless named=False), manifest.sig, and manifest.sig.p256 made
    by `signer` (dual's own P-256 key by default)."""
    manifest = Manifest(
        format_version=2, name="k8s", version="1.10.3", created=CREATED, spec_sha256="a" * 64,
        lock_sha256="b" * 64,
        files=tuple(FileEntry(p, len(d), hashlib.sha256(d).hexdigest(), m) for p, (d, m) in sorted(contents.items())),
        signer_p256=signature.encode_p256_public(dual.p256[1]) if named else "",
    )
    data = manifest.to_bytes()
    return [reg(layout.MANIFEST, data), reg(layout.SIGNATURE, sign(dual.ed[0], data)),
            reg(layout.SIGNATURE_P256, sign_p256((signer or dual.p256[0]), data))]


def both_rejected(bundle: Path, dual, tmp_path: Path, *needles: str) -> None:
    """Refused with the Ed25519 key and with the P-256 key, naming `needles` each time; dest untouched."""
    for name, pub in (("ed", dual.ed[1]), ("p256", dual.p256[1])):
        (tmp_path / name).mkdir()
        rejected(bundle, pub, tmp_path / name, *needles)


def test_crafted_dual_signed_bundle_verifies_with_either_key(dual, tmp_path) -> None:
    bundle = craft(tmp_path / "ok.bundle.tar.zst", dual_head(dual) + files_of(CONTENTS))
    assert verify_bundle(bundle, dual.ed[1]).checked == (layout.SIGNATURE, layout.SIGNATURE_P256)
    assert verify_bundle(bundle, dual.p256[1]).checked == (layout.SIGNATURE_P256,)
    assert verify_bundle(dual.good, dual.ed[1]).files == verify_bundle(dual.good, dual.p256[1]).files


def test_flipped_byte_in_the_p256_signature(dual, tmp_path) -> None:
    data = bytearray(tar_of(dual.good))
    data[data_offset(bytes(data), layout.SIGNATURE_P256) + 20] ^= 0x01
    bad = zst(tmp_path / "bad.bundle.tar.zst", bytes(data))
    both_rejected(bad, dual, tmp_path, "P-256 signature", layout.SIGNATURE_P256, "does not verify")


def test_p256_signature_before_the_ed25519_one(dual, tmp_path) -> None:
    head = dual_head(dual)
    members = [head[0], head[2], head[1]] + files_of(CONTENTS)
    both_rejected(craft(tmp_path / "b.bundle.tar.zst", members), dual, tmp_path, f"'{layout.SIGNATURE_P256}'",
                  "second member")


def test_p256_signature_after_a_file(dual, tmp_path) -> None:
    head, files = dual_head(dual), files_of(CONTENTS)
    members = head[:2] + files[:1] + [head[2]] + files[1:]
    bundle = craft(tmp_path / "b.bundle.tar.zst", members)
    (tmp_path / "ed").mkdir()
    rejected(bundle, dual.ed[1], tmp_path / "ed", layout.SIGNATURE_P256, "not the third member")
    (tmp_path / "p").mkdir()
    rejected(bundle, dual.p256[1], tmp_path / "p", "only an Ed25519 signature")


def test_p256_signature_member_later_in_a_bundle_that_names_no_p256_key(dual, tmp_path) -> None:
    head = dual_head(dual, named=False)
    members = head[:2] + files_of(CONTENTS) + [head[2]]
    rejected(craft(tmp_path / "b.bundle.tar.zst", members), dual.ed[1], tmp_path, layout.SIGNATURE_P256,
             "only as the third member")


def test_p256_signature_twice(dual, tmp_path) -> None:
    head = dual_head(dual)
    members = head + files_of(CONTENTS) + [head[2]]
    both_rejected(craft(tmp_path / "b.bundle.tar.zst", members), dual, tmp_path, layout.SIGNATURE_P256,
                  "more than once")
    members = head + [head[2]] + files_of(CONTENTS)  # third and fourth
    (tmp_path / "again").mkdir()
    both_rejected(craft(tmp_path / "c.bundle.tar.zst", members), dual, tmp_path / "again",
                  layout.SIGNATURE_P256, "more than once")


def test_oversized_p256_signature(dual, tmp_path) -> None:
    head = dual_head(dual)
    members = head[:2] + [reg(layout.SIGNATURE_P256, head[2][1] + b"\0" * 40)] + files_of(CONTENTS)
    both_rejected(craft(tmp_path / "b.bundle.tar.zst", members), dual, tmp_path, layout.SIGNATURE_P256,
                  "more than the 72 allowed")


def test_p256_signature_removed(dual, tmp_path) -> None:
    data = tar_of(dual.good)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        start = tar.getmember(layout.SIGNATURE_P256).offset  # its header block(s)
    end = data_offset(data, layout.SIGNATURE_P256) + 512  # its data: one block
    stripped = zst(tmp_path / "b.bundle.tar.zst", data[:start] + data[end:])
    (tmp_path / "ed").mkdir()
    rejected(stripped, dual.ed[1], tmp_path / "ed", layout.SIGNATURE_P256, "not the third member")
    (tmp_path / "p").mkdir()
    rejected(stripped, dual.p256[1], tmp_path / "p", "only an Ed25519 signature")


def test_p256_signature_in_a_bundle_whose_manifest_names_no_p256_key(dual, tmp_path) -> None:
    members = dual_head(dual, named=False) + files_of(CONTENTS)
    bundle = craft(tmp_path / "b.bundle.tar.zst", members)
    (tmp_path / "ed").mkdir()
    rejected(bundle, dual.ed[1], tmp_path / "ed", layout.SIGNATURE_P256, "names no P-256 key")
    (tmp_path / "p").mkdir()
    rejected(bundle, dual.p256[1], tmp_path / "p", "names no P-256 key")


def test_p256_signature_made_by_another_key(dual, tmp_path) -> None:
    """The manifest names my P-256 key, but manifest.sig.p256 was made by another one: refused with both of my
    keys, and with the other key too (the signed manifest does not name it)."""
    members = dual_head(dual, signer=dual.other[0]) + files_of(CONTENTS)
    bundle = craft(tmp_path / "b.bundle.tar.zst", members)
    both_rejected(bundle, dual, tmp_path, layout.SIGNATURE_P256, "does not verify",
                  signature.fingerprint(dual.p256[1]))
    (tmp_path / "other").mkdir()
    rejected(bundle, dual.other[1], tmp_path / "other", signature.fingerprint(dual.p256[1]),
             signature.fingerprint(dual.other[1]), "P-256 signer")


def test_p256_key_for_a_bundle_with_only_the_ed25519_signature(good, dual, tmp_path) -> None:
    text = rejected(good, dual.p256[1], tmp_path, "carries only an Ed25519 signature", "bundle.pub")
    assert "hint:" in text


def test_wrong_p256_public_key(dual, tmp_path) -> None:
    rejected(dual.good, dual.other[1], tmp_path, layout.SIGNATURE_P256, "does not verify",
             signature.fingerprint(dual.other[1]))
    with pytest.raises(Error, match="does not verify"):
        read_manifest(dual.good, dual.other[1])
