"""The bundle's signature checks with stock tools: GNU tar (or zstd) extracts it, openssl verifies it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from installer.bundle import Entry, generate_keypair, layout, load_private_key, write_bundle

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
        load_private_key(key_path), spec_sha256="a" * 64, lock_sha256="b" * 64, components={"kubernetes": "1.10.3"},
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
