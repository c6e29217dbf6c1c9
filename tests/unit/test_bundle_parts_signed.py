"""The parts index is signed with the bundle's keys; every part is checked against it, one by one or all of
them, and each bad one is named before anything is joined. Unsigned indexes (older bundles) still read, with
a warning; a signed index whose signatures were removed is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.bundle import (
    Entry,
    generate_keys,
    layout,
    load_p256_private_key,
    load_private_key,
    load_public_key,
    partcheck,
    parts,
    read_manifest,
    signature,
    verify_bundle,
    write_bundle,
)
from contract.errors import Error
from installer import cli

CREATED = "2018-05-21T10:00:00Z"


def _build(out: Path, keys, seed: bytes, *, p256: bool = True):
    src = out / "src"
    src.mkdir(parents=True)
    # 96 KB that do not compress: six parts of 16 KiB
    data = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(3000))
    (src / "kubelet").write_bytes(data)
    entry = Entry(layout.binary_path("kubelet"), src / "kubelet", len(data), hashlib.sha256(data).hexdigest(), 0o755)
    return write_bundle(out / "dist", "k8s", "1.10.3", [entry], load_private_key(keys.key),
                        p256_key=load_p256_private_key(keys.p256_key) if p256 else None, spec_sha256="a" * 64,
                        lock_sha256="b" * 64, components={}, created=CREATED, split_size="16KiB", level=1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, keys):
    return _build(tmp_path_factory.mktemp("pristine"), keys, b"one")


@pytest.fixture()
def split(pristine, tmp_path):
    """A fresh copy of the split bundle's directory: (index path, part paths)."""
    d = tmp_path / "medium"
    shutil.copytree(pristine.path.parent, d)
    return d / pristine.path.name, [d / p.name for p in pristine.parts]


def _never_joined(monkeypatch):
    """Fail the test if anything opens the parts as one stream."""
    def refuse(located):
        raise AssertionError("the parts were joined before every part was checked")
    monkeypatch.setattr(parts, "open_located", refuse)


def _sig_paths(index: Path):
    bundle = layout.bundle_of_index(index.name)
    return [index.parent / n for n in layout.parts_index_signature_filenames(bundle)]


def test_the_index_is_signed_with_both_keys_and_names_the_manifest(pristine, keys) -> None:
    sig, sig_p256 = _sig_paths(pristine.path)
    data = pristine.path.read_bytes()
    load_public_key(keys.pub).verify(sig.read_bytes(), data)
    signature.verify(load_public_key(keys.p256_pub), data, sig_p256.read_bytes())
    doc = json.loads(data)
    assert doc["manifest_sha256"] == hashlib.sha256(pristine.manifest.to_bytes()).hexdigest()
    assert doc["signer_p256"] == pristine.manifest.signer_p256
    ed = partcheck.load_index(parts.locate(pristine.path), load_public_key(keys.pub))
    assert ed.checked == (sig.name, sig_p256.name) and ed.signed and ed.warning == ""
    p = partcheck.load_index(parts.locate(pristine.path), load_public_key(keys.p256_pub))
    assert p.checked == (sig_p256.name,)
    report = verify_bundle(pristine.path, load_public_key(keys.pub))
    assert report.parts_index == f"signed: {sig.name}, {sig_p256.name}" and report.warnings == ()


def test_an_ed25519_only_build_has_no_p256_index_signature(tmp_path, keys) -> None:
    res = _build(tmp_path, keys, b"one", p256=False)
    sig, sig_p256 = _sig_paths(res.path)
    assert sig.is_file() and not sig_p256.exists()
    with pytest.raises(Error, match="carries only an Ed25519 signature"):
        partcheck.load_index(parts.locate(res.path), load_public_key(keys.p256_pub))
    again = _build(tmp_path / "again", keys, b"one")  # and a P-256 signed rebuild over it is consistent
    assert all(p.is_file() for p in _sig_paths(again.path))


def test_each_good_part_says_which_it_is(split, keys) -> None:
    _, part_paths = split
    for k, p in enumerate(part_paths, 1):
        r = partcheck.check_part(p, load_public_key(keys.pub))
        assert (r.number, r.count, r.name) == (k, len(part_paths), p.name)


def _truncate(ps, other):
    ps[1].write_bytes(ps[1].read_bytes()[:-1])
    return [ps[1]], "bytes, the index says"


def _swap(ps, other):
    a, b = ps[1].read_bytes(), ps[2].read_bytes()
    ps[1].write_bytes(b)
    ps[2].write_bytes(a)
    return [ps[1], ps[2]], "holds the content of part"


def _flip(ps, other):
    data = bytearray(ps[2].read_bytes())
    data[100] ^= 1
    ps[2].write_bytes(bytes(data))
    return [ps[2]], "another sha256"


def _foreign(ps, other):
    shutil.copyfile(other.parts[1], ps[1])  # the same name, from another build of the same bundle name
    return [ps[1]], "another sha256"


def _missing(ps, other):
    ps[2].unlink()
    return [ps[2]], "is missing"


def _extra(ps, other):
    extra = ps[0].parent / layout.part_filename(layout.parse_part_filename(ps[0].name)[0], len(ps))
    shutil.copyfile(other.parts[0], extra)
    return [extra], "not"


TAMPER = {"truncate": _truncate, "swap": _swap, "flip": _flip, "foreign": _foreign, "missing": _missing,
          "extra": _extra}


@pytest.fixture(scope="module")
def other_build(tmp_path_factory, keys):
    return _build(tmp_path_factory.mktemp("other"), keys, b"two")


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_bad_part_is_named_one_by_one_and_before_joining(case, split, keys, other_build, monkeypatch) -> None:
    index, ps = split
    bad, why = TAMPER[case](ps, other_build)
    key = load_public_key(keys.pub)
    for p in bad:  # as each comes off the medium
        with pytest.raises(Error) as e:
            partcheck.check_part(p, key)
        assert p.name in e.value.message and why in e.value.message, e.value.render()
    for p in ps:
        if p not in bad:
            partcheck.check_part(p, key)  # the good ones still check
    _never_joined(monkeypatch)
    for handle in (index, index.parent):
        with pytest.raises(Error) as e:
            verify_bundle(handle, key)
        text = e.value.render()
        assert f"{len(bad)} bad part(s)" in text and "nothing joined" in text, text
        for p in bad:
            assert p.name in e.value.message and why in text, text
        assert not any(p.name in text for p in ps if p not in bad), text


def test_a_modified_index_or_another_key_is_refused(split, keys, other_keys, monkeypatch) -> None:
    index, _ = split
    _never_joined(monkeypatch)
    with pytest.raises(Error, match="does not verify"):
        verify_bundle(index, load_public_key(other_keys.pub))
    doc = json.loads(index.read_text())
    doc["parts"][1]["sha256"], doc["parts"][2]["sha256"] = doc["parts"][2]["sha256"], doc["parts"][1]["sha256"]
    index.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for pub in (keys.pub, keys.p256_pub):
        with pytest.raises(Error) as e:
            verify_bundle(index, load_public_key(pub))
        assert "does not verify" in e.value.message and index.name in e.value.message


def test_removing_the_signatures_does_not_make_it_an_unsigned_index(split, keys, monkeypatch) -> None:
    index, ps = split
    for p in _sig_paths(index):
        p.unlink()
    _never_joined(monkeypatch)
    with pytest.raises(Error, match="so it was signed, but its signature files"):
        verify_bundle(index, load_public_key(keys.pub))
    with pytest.raises(Error, match="so it was signed, but its signature files"):
        partcheck.check_part(ps[0], load_public_key(keys.pub))


def test_a_stray_p256_signature_or_a_missing_one_is_refused(tmp_path, keys) -> None:
    res = _build(tmp_path / "ed", keys, b"one", p256=False)
    sig, sig_p256 = _sig_paths(res.path)
    sig_p256.write_bytes(b"\x30" * 70)
    with pytest.raises(Error, match="names no P-256 signer"):
        verify_bundle(res.path, load_public_key(keys.pub))
    dual = _build(tmp_path / "dual", keys, b"one")
    _sig_paths(dual.path)[1].unlink()
    with pytest.raises(Error, match="is missing beside"):
        verify_bundle(dual.path, load_public_key(keys.pub))


def test_a_signed_index_naming_another_manifest_is_refused(split, keys) -> None:
    index, _ = split
    doc = json.loads(index.read_text())
    doc["manifest_sha256"] = "0" * 64
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    index.write_bytes(data)
    sig, sig_p256 = _sig_paths(index)
    sig.write_bytes(signature.sign(load_private_key(keys.key), data))
    sig_p256.write_bytes(signature.sign_p256(load_p256_private_key(keys.p256_key), data))
    for check in (verify_bundle, read_manifest):  # the head alone (plan and apply read it first) too
        with pytest.raises(Error, match="names manifest sha256 0000000000000000") as e:
            check(index, load_public_key(keys.pub))
        assert "come from different bundles" in e.value.render()


def _unsign(index: Path) -> None:
    """The index as bundlers before signed indexes wrote it."""
    doc = json.loads(index.read_text())
    del doc["manifest_sha256"], doc["signer_p256"]
    index.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for p in _sig_paths(index):
        p.unlink()


def test_an_unsigned_index_of_an_older_bundle_is_read_with_a_warning(split, keys) -> None:
    index, ps = split
    _unsign(index)
    report = verify_bundle(index, load_public_key(keys.pub))
    assert report.parts_index == "unsigned" and "is unsigned" in report.warnings[0]
    r = partcheck.check_part(ps[1], load_public_key(keys.pub))
    assert (r.number, r.index.signed) == (2, False)
    ps[1].write_bytes(ps[1].read_bytes()[:-1])  # damage is still named before joining
    with pytest.raises(Error, match="bad part"):
        verify_bundle(index, load_public_key(keys.pub))


def test_unsigned_index_signature_files_without_manifest_name_are_refused(split, keys) -> None:
    index, _ = split
    doc = json.loads(index.read_text())
    del doc["manifest_sha256"]
    index.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with pytest.raises(Error, match="names no manifest"):
        verify_bundle(index, load_public_key(keys.pub))


# ---- the CLI ------------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def test_cli_verify_one_part_says_which_it_is(split, keys) -> None:
    _, ps = split
    r = invoke("verify", str(ps[1]), "--pub", str(keys.pub))
    assert r.exit_code == 0, r.output
    assert f"{ps[1]}: OK: part 2 of {len(ps)} of k8s-1.10.3.bundle.tar.zst" in r.output
    r = invoke("verify", str(ps[1]), "--pub", str(keys.p256_pub), "--json")
    d = json.loads(r.output)
    assert (d["number"], d["count"], d["parts_index"]) == (2, len(ps), "signed: "
                                                           "k8s-1.10.3.bundle.tar.zst.parts.json.sig.p256")


def test_cli_verify_a_bad_part_and_the_whole_set(split, keys) -> None:
    index, ps = split
    ps[2].write_bytes(ps[2].read_bytes()[:-5])
    r = invoke("verify", str(ps[2]), "--pub", str(keys.pub))
    assert r.exit_code != 0 and f"part {ps[2].name} (part 3 of {len(ps)})" in r.output, r.output
    assert "Traceback" not in r.output
    r = invoke("verify", str(index.parent), "--pub", str(keys.pub))
    assert r.exit_code != 0 and "1 bad part(s)" in r.output and ps[2].name in r.output, r.output


def test_cli_verify_whole_set_reports_the_index_and_warns_when_unsigned(split, keys) -> None:
    index, _ = split
    d = json.loads(invoke("verify", str(index), "--pub", str(keys.pub), "--json").output)
    assert d["parts_index"].startswith("signed: ") and d["warnings"] == []
    _unsign(index)
    r = invoke("verify", str(index.parent), "--pub", str(keys.pub))
    assert r.exit_code == 0, r.output
    assert "parts index unsigned" in r.output and "WARNING: parts index" in r.output
    assert os.path.exists(index)
