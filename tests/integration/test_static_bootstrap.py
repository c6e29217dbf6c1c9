"""static/bootstrap.sh: openssl + sha256sum take the static installer out of a bundle, or refuse clearly.

A stand-in executable (a small shell script) is enough here: bootstrap.sh only moves and checks bytes.
The real static executable goes through bootstrap.sh in test_static.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Optional

import pytest
import zstandard

from bundler import static
from contract import bundle as fmt
from tests.typed_contents import typed

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "static" / "bootstrap.sh"
SHELL = shutil.which("dash") or "/bin/sh"  # dash: no bashisms slip into a script meant for any POSIX sh
EXE = b"#!/bin/sh\necho stand-in installer\nexit 0\n" + bytes(range(256)) * 4096


def _openssl_has_rawin() -> bool:
    r = subprocess.run(["openssl", "pkeyutl", "-help"], capture_output=True, text=True, check=False)
    return "-rawin" in r.stdout + r.stderr


pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or not _openssl_has_rawin(),
                                reason="needs OpenSSL >= 3.0 (pkeyutl -rawin) for Ed25519")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A signed bundle holding a stand-in installer-linux-amd64, the same split into parts, a bootstrap.tar."""
    d = tmp_path_factory.mktemp("bootstrap")
    fmt.generate_keypair(d / "keys")
    fmt.generate_keypair(d / "other")
    exe = d / "installer-linux-amd64"
    exe.write_bytes(EXE)
    noise = d / "noise.bin"
    noise.write_bytes(os.urandom(3 << 20))  # incompressible: the split gives several parts
    entries = [static.entry(exe),
               fmt.Entry("binaries/noise.bin", noise, noise.stat().st_size, _sha(noise.read_bytes()), 0o644)]
    key = fmt.load_private_key(d / "keys" / "bundle.key")
    kw = dict(spec_sha256="0" * 64, lock_sha256="1" * 64, level=3, **typed({"binary/noise": "1"}, "binaries/noise.bin"))
    whole = fmt.write_bundle(d / "dist", "k8s", "1.10.3", entries, key, **kw)
    split = fmt.write_bundle(d / "split", "k8s", "1.10.3", entries, key, split_size="1M", **kw)
    boot = static.write_bootstrap_tar(whole.path, exe)
    return {"dir": d, "bundle": whole.path, "split": d / "split", "parts": split.parts, "boot": boot,
            "pub": d / "keys" / "bundle.pub", "other_pub": d / "other" / "bundle.pub"}


def run_bootstrap(src: Path, pub: Path, dest: Path, path: str = os.environ.get("PATH", ""),
                  openssl: Optional[Path] = None):
    env = {"PATH": path, "LC_ALL": "C", **({"OPENSSL": str(openssl)} if openssl else {})}
    return subprocess.run([SHELL, str(BOOTSTRAP), str(src), str(pub), str(dest)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def _refused(r, *words: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bootstrap: REFUSED:" in r.stderr and all(w in r.stderr for w in words), r.stderr


def _retar(bundle: Path, out: Path, edit) -> Path:
    """A copy of the bundle whose uncompressed tar stream went through edit(tar bytes, {member: data offset})."""
    raw = bytearray(zstandard.ZstdDecompressor().stream_reader(bundle.open("rb")).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as t:
        offsets = {m.name: m.offset_data for m in t.getmembers()}
    edit(raw, offsets)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(zstandard.ZstdCompressor(level=3).compress(bytes(raw)))
    return out


@pytest.mark.parametrize("source", ["bundle", "split", "boot"])
def test_extracts_the_verified_executable(bundles, tmp_path, source):
    r = run_bootstrap(bundles[source], bundles["pub"], tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "bin" / "installer-linux-amd64"
    assert exe.read_bytes() == EXE and os.access(exe, os.X_OK)
    assert "matches the signed manifest" in r.stdout
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout == "stand-in installer\n"
    assert len(bundles["parts"]) > 2


def test_without_zstd_it_uses_the_bootstrap_tar_beside_the_bundle(bundles, tmp_path):
    tools = tmp_path / "tools"  # every command of this machine except zstd
    tools.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for p in Path(d).iterdir():
            if not p.name.startswith("zstd") and not (tools / p.name).exists():
                (tools / p.name).symlink_to(p)
    r = run_bootstrap(bundles["bundle"], bundles["pub"], tmp_path / "bin", path=str(tools))
    assert r.returncode == 0, r.stderr
    assert "zstd is not installed; using" in r.stderr and ".bootstrap.tar" in r.stderr
    assert (tmp_path / "bin" / "installer-linux-amd64").read_bytes() == EXE
    alone = tmp_path / "alone"  # the bundle without its bootstrap.tar
    alone.mkdir()
    shutil.copy(bundles["bundle"], alone)
    r = run_bootstrap(alone / bundles["bundle"].name, bundles["pub"], tmp_path / "bin2", path=str(tools))
    _refused(r, "zstd is not installed", "bootstrap.tar")
    assert not (tmp_path / "bin2").exists()


def test_refuses_a_tampered_executable(bundles, tmp_path):
    def flip(raw, off):
        raw[off["installer/installer-linux-amd64"] + 100] ^= 0xFF

    bad = _retar(bundles["bundle"], tmp_path / "bad" / bundles["bundle"].name, flip)
    r = run_bootstrap(bad, bundles["pub"], tmp_path / "bin")
    _refused(r, "installer/installer-linux-amd64 does not match the signed manifest", _sha(EXE))
    assert not (tmp_path / "bin").exists()


def test_refuses_a_tampered_signature_or_manifest(bundles, tmp_path):
    def flip_sig(raw, off):
        raw[off["manifest.sig"] + 7] ^= 0x01

    def rehash(raw, off):
        # a consistent forgery: new executable bytes AND its new sha256 in the manifest
        start = off["installer/installer-linux-amd64"]
        raw[start + 100] ^= 0xFF
        forged = _sha(bytes(raw[start:start + len(EXE)]))
        m = off["manifest.json"]
        text = bytes(raw[m:m + 4096])
        i = m + text.index(_sha(EXE).encode())
        raw[i:i + 64] = forged.encode()

    for name, edit in (("sig", flip_sig), ("manifest", rehash)):
        bad = _retar(bundles["bundle"], tmp_path / name / bundles["bundle"].name, edit)
        r = run_bootstrap(bad, bundles["pub"], tmp_path / f"bin-{name}")
        _refused(r, "signature of manifest.json does not verify")
        assert not (tmp_path / f"bin-{name}").exists()
    r = run_bootstrap(bundles["bundle"], bundles["other_pub"], tmp_path / "bin-key")
    _refused(r, "signature of manifest.json does not verify")


def test_refuses_a_missing_part_and_a_non_bundle(bundles, tmp_path):
    d = tmp_path / "parts"
    shutil.copytree(bundles["split"], d)
    (d / bundles["parts"][1].name).unlink()
    _refused(run_bootstrap(d, bundles["pub"], tmp_path / "bin"), "part 001", "is missing")
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not a bundle" * 100)
    _refused(run_bootstrap(junk, bundles["pub"], tmp_path / "bin"), "neither a bundle")


def test_refuses_a_bundle_without_the_static_installer(bundles, tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    key = fmt.load_private_key(bundles["dir"] / "keys" / "bundle.key")
    r = fmt.write_bundle(tmp_path / "d", "k8s", "1.10.3", [fmt.Entry("manifests/f.txt", f, 1, _sha(b"x"))], key,
                         spec_sha256="0" * 64, lock_sha256="1" * 64, components={}, level=3)
    _refused(run_bootstrap(r.path, bundles["pub"], tmp_path / "bin"), "lists no installer/installer-linux-amd64")


def test_bootstrap_tar_holds_the_bundles_signed_manifest(bundles):
    _, manifest_bytes, sig = fmt.read_manifest(bundles["bundle"], fmt.load_public_key(bundles["pub"]))
    with tarfile.open(bundles["boot"]) as t:
        names = t.getnames()
        assert names == ["manifest.json", "manifest.sig", "installer/installer-linux-amd64", "bootstrap.sh"]
        assert t.extractfile("manifest.json").read() == manifest_bytes
        assert t.extractfile("manifest.sig").read() == sig
        assert t.getmember("installer/installer-linux-amd64").mode == 0o755
    for name in ("k8s-1.10.3.bundle.tar.zst", "k8s-1.10.3.bundle.tar.zst.part007",
                 "k8s-1.10.3.bundle.tar.zst.parts.json"):
        assert static.bootstrap_filename(name) == "k8s-1.10.3.bootstrap.tar"


def test_bootstrap_tar_of_a_split_bundle_lies_beside_its_parts(bundles, tmp_path):
    d = tmp_path / "split"
    shutil.copytree(bundles["split"], d)
    index = next(d.glob("*.parts.json"))
    exe = bundles["dir"] / "installer-linux-amd64"
    assert static.write_bootstrap_tar(index, exe) == d / "k8s-1.10.3.bootstrap.tar"
    assert static.write_bootstrap_tar(d, exe) == d / "k8s-1.10.3.bootstrap.tar"
    r = run_bootstrap(d / "k8s-1.10.3.bootstrap.tar", bundles["pub"], tmp_path / "bin")
    assert r.returncode == 0, r.stderr



# ---- CentOS 7: openssl 1.0.2k cannot verify Ed25519, so the P-256 signature is checked ---------------

# openssl as CentOS 7's 1.0.2k looks to bootstrap.sh: `pkeyutl` has no -rawin and no key file holding an
# Ed25519 key loads (its OID 1.3.101.112 is "BQYDK2Vw" in a PEM key); everything else is the real openssl,
# whose `pkey -text` and `dgst -sha256 -verify` behave for P-256 as 1.0.2's do.
OPENSSL_102 = """#!/bin/sh
case "$1" in
  version) echo "OpenSSL 1.0.2k-fips  26 Jan 2017"; exit 0 ;;
  pkeyutl)
    for a in "$@"; do
      case "$a" in
        -help) printf '%s\n' "Usage: pkeyutl [options]" "-in file        input file" \
                 "-out file       output file" "-sigfile file signature file (verify operation only)" \
                 "-inkey file     input key" "-pubin          input is a public key" \
                 "-sign           sign with private key" "-verify         verify with public key" >&2
               exit 1 ;;
        -rawin) echo "pkeyutl: Unrecognized flag -rawin" >&2; exit 1 ;;
      esac
    done ;;
esac
prev=
for a in "$@"; do
  case "$prev" in
    -in|-inkey|-verify|-prverify|-signkey)
      if [ -f "$a" ] && grep -q BQYDK2Vw "$a"; then echo "unable to load Public Key" >&2; exit 1; fi ;;
  esac
  prev=$a
done
exec REAL "$@"
"""


@pytest.fixture(scope="module")
def openssl_102(tmp_path_factory) -> Path:
    wrapper = tmp_path_factory.mktemp("openssl-1.0.2") / "openssl"
    wrapper.write_text(OPENSSL_102.replace("exec REAL", f"exec {shutil.which('openssl')}"))
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """Bundles signed with both keys of `bundler keygen` (whole, split, bootstrap.tar) and the keys."""
    d = tmp_path_factory.mktemp("bootstrap-dual")
    keys = fmt.generate_keys(d / "keys")
    other = fmt.generate_keys(d / "other")
    exe = d / "installer-linux-amd64"
    exe.write_bytes(EXE)
    noise = d / "noise.bin"
    noise.write_bytes(os.urandom(3 << 20))
    entries = [static.entry(exe),
               fmt.Entry("binaries/noise.bin", noise, noise.stat().st_size, _sha(noise.read_bytes()), 0o644)]
    kw = dict(spec_sha256="0" * 64, lock_sha256="1" * 64, level=3, **typed({"binary/noise": "1"}, "binaries/noise.bin"),
              p256_key=fmt.load_p256_private_key(keys.p256_key))
    key = fmt.load_private_key(keys.key)
    whole = fmt.write_bundle(d / "dist", "k8s", "1.10.3", entries, key, **kw)
    split = fmt.write_bundle(d / "split", "k8s", "1.10.3", entries, key, split_size="1M", **kw)
    alone = d / "alone"  # bundle.pub without bundle-p256.pub beside it
    alone.mkdir()
    shutil.copy(keys.pub, alone / "bundle.pub")
    return {"dir": d, "bundle": whole.path, "split": d / "split", "parts": split.parts, "keys": keys,
            "boot": static.write_bootstrap_tar(whole.path, exe), "other": other, "alone_pub": alone / "bundle.pub"}


def test_the_stand_in_is_an_openssl_without_ed25519(openssl_102, dual, tmp_path):
    """So the tests below are what a CentOS 7 host sees."""
    r = subprocess.run([str(openssl_102), "pkeyutl", "-help"], capture_output=True, text=True, check=False)
    assert "-rawin" not in r.stdout + r.stderr and "-sigfile" in r.stderr
    ed = subprocess.run([str(openssl_102), "pkey", "-pubin", "-in", str(dual["keys"].pub), "-noout", "-text"],
                        capture_output=True, text=True, check=False)
    assert ed.returncode != 0
    p256 = subprocess.run([str(openssl_102), "pkey", "-pubin", "-in", str(dual["keys"].p256_pub), "-noout",
                           "-text"], capture_output=True, text=True, check=True)
    assert "ASN1 OID: prime256v1" in p256.stdout
    r = run_bootstrap(dual["bundle"], dual["alone_pub"], tmp_path / "bin", openssl=openssl_102)
    assert "OpenSSL 1.0.2k" in r.stderr and not (tmp_path / "bin").exists()


@pytest.mark.parametrize("source", ["bundle", "split", "boot"])
def test_p256_key_with_openssl_1_0_2(dual, openssl_102, tmp_path, source):
    r = run_bootstrap(dual[source], dual["keys"].p256_pub, tmp_path / "bin", openssl=openssl_102)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bin" / "installer-linux-amd64").read_bytes() == EXE
    assert "matches the signed manifest" in r.stdout and "manifest.sig.p256 verified" in r.stdout
    assert "REFUSED" not in r.stderr


def test_p256_key_with_openssl_3_too(dual, tmp_path):
    r = run_bootstrap(dual["bundle"], dual["keys"].p256_pub, tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert "manifest.sig.p256 verified" in r.stdout


def test_ed25519_key_with_openssl_3_checks_manifest_sig_as_before(dual, tmp_path):
    r = run_bootstrap(dual["bundle"], dual["keys"].pub, tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert "manifest.sig verified" in r.stdout and "p256" not in r.stdout + r.stderr


def test_ed25519_key_with_openssl_1_0_2_uses_the_p256_key_beside_it(dual, openssl_102, tmp_path):
    r = run_bootstrap(dual["bundle"], dual["keys"].pub, tmp_path / "bin", openssl=openssl_102)
    assert r.returncode == 0, r.stderr
    assert f"using {dual['keys'].p256_pub}" in r.stderr and "cannot verify Ed25519" in r.stderr
    assert "manifest.sig.p256 verified" in r.stdout
    assert (tmp_path / "bin" / "installer-linux-amd64").read_bytes() == EXE


def test_ed25519_key_alone_with_openssl_1_0_2_is_refused_naming_both_ways_out(dual, openssl_102, tmp_path):
    r = run_bootstrap(dual["bundle"], dual["alone_pub"], tmp_path / "bin", openssl=openssl_102)
    _refused(r, "OpenSSL 1.0.2k", "cannot verify Ed25519", "bundle-p256.pub", "OPENSSL=/path/to/openssl3")
    assert not (tmp_path / "bin").exists()


def test_p256_key_for_a_bundle_with_only_the_ed25519_signature(bundles, dual, openssl_102, tmp_path):
    for n, openssl in enumerate((openssl_102, None)):
        r = run_bootstrap(bundles["bundle"], dual["keys"].p256_pub, tmp_path / f"bin{n}", openssl=openssl)
        _refused(r, "carries no P-256 signature", "bundle.pub", "OPENSSL=")
        assert not (tmp_path / f"bin{n}").exists()


def test_p256_refusals(dual, openssl_102, tmp_path):
    def flip(raw, off):
        raw[off["manifest.sig.p256"] + 20] ^= 0x01

    bad = _retar(dual["bundle"], tmp_path / "bad" / dual["bundle"].name, flip)
    for n, pub in enumerate((dual["keys"].p256_pub, dual["keys"].pub)):  # the key given, or the one beside
        r = run_bootstrap(bad, pub, tmp_path / f"bin{n}", openssl=openssl_102)
        _refused(r, "manifest.sig.p256: the P-256 signature of manifest.json does not verify")
        assert not (tmp_path / f"bin{n}").exists()
    r = run_bootstrap(dual["bundle"], dual["other"].p256_pub, tmp_path / "bin-other", openssl=openssl_102)
    _refused(r, "does not verify with", str(dual["other"].p256_pub))
    assert not (tmp_path / "bin-other").exists()


def test_bootstrap_tar_carries_the_p256_signature(dual):
    _, head, _ = fmt.read_signed_head(dual["bundle"], fmt.load_public_key(dual["keys"].p256_pub))
    with tarfile.open(dual["boot"]) as t:
        assert t.getnames() == ["manifest.json", "manifest.sig", "manifest.sig.p256",
                                "installer/installer-linux-amd64", "bootstrap.sh"]
        assert t.extractfile("manifest.json").read() == head.manifest_bytes
        assert t.extractfile("manifest.sig").read() == head.sig
        assert t.extractfile("manifest.sig.p256").read() == head.sig_p256
