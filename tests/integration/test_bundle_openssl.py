"""The bundle's signatures check with stock tools: GNU tar (or zstd) extracts them, openssl verifies them.

manifest.sig (Ed25519) needs OpenSSL >= 3.0 (`pkeyutl -rawin`); manifest.sig.p256 (ECDSA P-256) is checked
with `openssl dgst -sha256 -verify`, which works the same on OpenSSL 3 and on CentOS 7's openssl 1.0.2.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract.bundle import (
    Entry,
    generate_keypair,
    generate_keys,
    layout,
    load_p256_private_key,
    load_private_key,
    write_bundle,
)
from tests.typed_contents import typed

pytestmark = pytest.mark.integration

if not shutil.which("openssl") or not (shutil.which("zstd") or shutil.which("tar")):
    pytest.skip("needs openssl and zstd or GNU tar with --zstd", allow_module_level=True)


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> tuple[Path, Path]:
    """(directory holding manifest.json and manifest.sig as extracted by stock tools, bundle.pub)."""
    root = tmp_path_factory.mktemp("openssl")
    key_path, pub_path = generate_keypair(root / "keys")
    data = b"#!/bin/sh\necho kubelet\n"
    source = root / "kubelet"
    source.write_bytes(data)
    result = write_bundle(
        root / "dist", "k8s", "1.10.3",
        [Entry(layout.binary_path("kubelet"), source, len(data), hashlib.sha256(data).hexdigest(), 0o755)],
        load_private_key(key_path), spec_sha256="a" * 64, lock_sha256="b" * 64, **typed({"binary/kubernetes-server": "1.10.3"}),
    )
    out = root / "extracted"
    out.mkdir()
    if shutil.which("zstd"):
        cmd = f"zstd -dc '{result.path}' | tar -x -C '{out}' {layout.MANIFEST} {layout.SIGNATURE}"
    else:
        cmd = f"tar --zstd -xf '{result.path}' -C '{out}' {layout.MANIFEST} {layout.SIGNATURE}"
    subprocess.run(cmd, shell=True, check=True)
    return out, pub_path


def openssl_verify(manifest: Path, sig: Path, pub: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
         "-in", str(manifest), "-sigfile", str(sig)],
        capture_output=True, text=True, check=False,
    )


def test_openssl_verifies_the_signature(signed) -> None:
    out, pub = signed
    done = openssl_verify(out / layout.MANIFEST, out / layout.SIGNATURE, pub)
    assert done.returncode == 0, done.stderr
    assert "Signature Verified Successfully" in done.stdout


def test_openssl_rejects_a_modified_manifest(signed, tmp_path) -> None:
    out, pub = signed
    modified = tmp_path / layout.MANIFEST
    modified.write_bytes((out / layout.MANIFEST).read_bytes().replace(b"1.10.3", b"1.10.4"))
    done = openssl_verify(modified, out / layout.SIGNATURE, pub)
    assert done.returncode != 0
    assert "Signature Verified Successfully" not in done.stdout


def test_gnu_tar_lists_only_regular_files(signed) -> None:
    out, _ = signed
    bundle = next((out.parent / "dist").iterdir())
    if not shutil.which("zstd"):
        pytest.skip("needs zstd")
    listing = subprocess.run(f"zstd -dc '{bundle}' | tar -tv", shell=True, check=True, capture_output=True,
                             text=True).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == [layout.MANIFEST, layout.SIGNATURE, "binaries/kubelet"]
    assert all(line.startswith("-") and " 0/0 " in line for line in listing)


# ---- the P-256 signature, as a CentOS 7 host checks it ------------------------------------------------

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """A bundle signed with both keys of `bundler keygen`, its head extracted by stock tools, and the keys."""
    root = tmp_path_factory.mktemp("openssl-dual")
    keys = generate_keys(root / "keys")
    data = b"#!/bin/sh\necho kubelet\n"
    source = root / "kubelet"
    source.write_bytes(data)
    result = write_bundle(
        root / "dist", "k8s", "1.10.3",
        [Entry(layout.binary_path("kubelet"), source, len(data), hashlib.sha256(data).hexdigest(), 0o755)],
        load_private_key(keys.key), p256_key=load_p256_private_key(keys.p256_key),
        spec_sha256="a" * 64, lock_sha256="b" * 64, **typed({"binary/kubernetes-server": "1.10.3"}),
    )
    out = root / "extracted"
    out.mkdir()
    head = f"{layout.MANIFEST} {layout.SIGNATURE} {layout.SIGNATURE_P256}"
    if shutil.which("zstd"):
        cmd = f"zstd -dc '{result.path}' | tar -x -C '{out}' {head}"
    else:
        cmd = f"tar --zstd -xf '{result.path}' -C '{out}' {head}"
    subprocess.run(cmd, shell=True, check=True)
    return out, keys, result


def openssl_dgst_verify(manifest: Path, sig: Path, pub: Path) -> subprocess.CompletedProcess:
    """Exactly the check a CentOS 7 host runs with its openssl 1.0.2k."""
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(manifest)],
                          capture_output=True, text=True, check=False)


def test_stock_openssl_dgst_verifies_the_p256_signature(dual) -> None:
    out, keys, _ = dual
    done = openssl_dgst_verify(out / layout.MANIFEST, out / layout.SIGNATURE_P256, keys.p256_pub)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Verified OK"
    # and the Ed25519 signature of the same bytes, with OpenSSL 3
    done = openssl_verify(out / layout.MANIFEST, out / layout.SIGNATURE, keys.pub)
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, done.stderr


def test_stock_openssl_dgst_rejects_a_modified_manifest_and_another_key(dual, tmp_path) -> None:
    out, keys, _ = dual
    modified = tmp_path / layout.MANIFEST
    modified.write_bytes((out / layout.MANIFEST).read_bytes().replace(b"1.10.3", b"1.10.4"))
    done = openssl_dgst_verify(modified, out / layout.SIGNATURE_P256, keys.p256_pub)
    assert done.returncode != 0 and "Verified OK" not in done.stdout
    other = generate_keys(tmp_path / "other")
    done = openssl_dgst_verify(out / layout.MANIFEST, out / layout.SIGNATURE_P256, other.p256_pub)
    assert done.returncode != 0 and "Verified OK" not in done.stdout


def test_openssl_reads_the_manifests_p256_signer_as_the_same_key(dual) -> None:
    """signer_p256 is base64 DER SubjectPublicKeyInfo: openssl's own DER of bundle-p256.pub, byte for byte."""
    import base64
    import json

    out, keys, _ = dual
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(keys.p256_pub), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert base64.b64decode(json.loads((out / layout.MANIFEST).read_text())["signer_p256"]) == der


@pytest.mark.parametrize("which", ["pub", "p256_pub"])
def test_installer_verifies_the_dual_signed_bundle_with_either_key(dual, which) -> None:
    _, keys, result = dual
    done = subprocess.run([str(BIN / "installer"), "verify", str(result.path), "--pub", str(getattr(keys, which))],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert ": OK: k8s 1.10.3" in done.stdout


def test_gnu_tar_lists_both_signatures_first(dual) -> None:
    if not shutil.which("zstd"):
        pytest.skip("needs zstd")
    _, _, result = dual
    listing = subprocess.run(f"zstd -dc '{result.path}' | tar -t", shell=True, check=True, capture_output=True,
                             text=True).stdout.split()
    assert listing == [layout.MANIFEST, layout.SIGNATURE, layout.SIGNATURE_P256, "binaries/kubelet"]


# ---- the parts index of a split bundle: signed like the manifest, checked with the same openssl commands ----


@pytest.fixture(scope="module")
def split_dual(tmp_path_factory):
    """A bundle split into parts, signed with both keys: (its parts index, the keys)."""
    root = tmp_path_factory.mktemp("openssl-split")
    keys = generate_keys(root / "keys")
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2000))
    source = root / "kubelet"
    source.write_bytes(data)
    result = write_bundle(
        root / "dist", "k8s", "1.10.3",
        [Entry(layout.binary_path("kubelet"), source, len(data), hashlib.sha256(data).hexdigest(), 0o755)],
        load_private_key(keys.key), p256_key=load_p256_private_key(keys.p256_key),
        spec_sha256="a" * 64, lock_sha256="b" * 64, **typed({"binary/kubernetes-server": "1.10.3"}), split_size="16KiB",
    )
    assert len(result.parts) > 2
    return result.path, keys


def index_signatures(index: Path) -> tuple[Path, Path]:
    return tuple(index.parent / n for n in layout.parts_index_signature_filenames(layout.bundle_of_index(index.name)))


def test_openssl_verifies_both_signatures_of_the_parts_index(split_dual) -> None:
    index, keys = split_dual
    sig, sig_p256 = index_signatures(index)
    done = openssl_verify(index, sig, keys.pub)
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, done.stderr
    done = openssl_dgst_verify(index, sig_p256, keys.p256_pub)
    assert done.returncode == 0 and done.stdout.strip() == "Verified OK", done.stderr


def test_openssl_rejects_a_modified_parts_index(split_dual, tmp_path) -> None:
    index, keys = split_dual
    sig, sig_p256 = index_signatures(index)
    modified = tmp_path / index.name
    modified.write_bytes(index.read_bytes().replace(b'"size": 16384', b'"size": 16385', 1))
    assert modified.read_bytes() != index.read_bytes()
    assert openssl_verify(modified, sig, keys.pub).returncode != 0
    assert openssl_dgst_verify(modified, sig_p256, keys.p256_pub).returncode != 0


def test_installer_verify_names_the_part_it_checked(split_dual) -> None:
    index, keys = split_dual
    part = index.parent / layout.part_filename(layout.bundle_of_index(index.name), 1)
    done = subprocess.run([str(BIN / "installer"), "verify", str(part), "--pub", str(keys.p256_pub)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{part}: OK: part 2 of " in done.stdout
