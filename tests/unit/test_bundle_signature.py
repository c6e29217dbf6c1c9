"""Key files (Ed25519 and ECDSA P-256), signatures and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contract.bundle import signature
from contract.errors import Error


@pytest.fixture()
def keys(tmp_path):
    return signature.generate_keypair(tmp_path / "keys")


def test_generate_writes_private_0600_and_public(keys) -> None:
    key_path, pub_path = keys
    assert key_path.name == "bundle.key" and pub_path.name == "bundle.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_generate_refuses_to_overwrite(keys) -> None:
    key_path = keys[0]
    before = key_path.read_bytes()
    with pytest.raises(Error) as e:
        signature.generate_keypair(key_path.parent)
    assert "overwrite" in e.value.message and e.value.hint
    assert key_path.read_bytes() == before


def test_generate_refuses_when_only_the_public_key_exists(tmp_path) -> None:
    (tmp_path / "bundle.pub").write_text("x")
    with pytest.raises(Error, match="bundle.pub"):
        signature.generate_keypair(tmp_path)
    assert not (tmp_path / "bundle.key").exists()


def test_sign_and_verify(keys) -> None:
    private = signature.load_private_key(keys[0])
    public = signature.load_public_key(keys[1])
    sig = signature.sign(private, b"manifest bytes")
    assert len(sig) == 64
    signature.verify(public, b"manifest bytes", sig)
    with pytest.raises(Error, match="does not verify"):
        signature.verify(public, b"manifest bytez", sig)
    with pytest.raises(Error, match="64"):
        signature.verify(public, b"manifest bytes", sig[:-1])


def test_verify_with_another_key_fails(keys, tmp_path) -> None:
    other = signature.load_public_key(signature.generate_keypair(tmp_path / "other")[1])
    sig = signature.sign(signature.load_private_key(keys[0]), b"data")
    with pytest.raises(Error) as e:
        signature.verify(other, b"data", sig)
    assert signature.fingerprint(other) in e.value.message


def test_fingerprint_is_sha256_of_raw_key(keys) -> None:
    public = signature.load_public_key(keys[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    assert signature.fingerprint(public) == expected
    assert signature.fingerprint(signature.load_private_key(keys[0]).public_key()) == expected


def test_missing_files(tmp_path) -> None:
    with pytest.raises(Error, match="does not exist"):
        signature.load_private_key(tmp_path / "nope.key")
    with pytest.raises(Error, match="does not exist"):
        signature.load_public_key(tmp_path / "nope.pub")


def test_public_key_given_as_private_and_vice_versa(keys) -> None:
    with pytest.raises(Error, match="public key") as e:
        signature.load_private_key(keys[1])
    assert "bundle.key" in e.value.hint
    with pytest.raises(Error, match="private key"):
        signature.load_public_key(keys[0])


def _pem_files(tmp_path, key):
    priv = tmp_path / "other.key"
    pub = tmp_path / "other.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.mark.parametrize("make", [lambda: rsa.generate_private_key(65537, 2048),
                                  lambda: ec.generate_private_key(ec.SECP384R1())])
def test_other_key_types_are_refused(tmp_path, make) -> None:
    priv, pub = _pem_files(tmp_path, make())
    with pytest.raises(Error, match="Ed25519"):
        signature.load_private_key(priv)
    with pytest.raises(Error, match="P-256") as e:
        signature.load_p256_private_key(priv)
    assert "bundle-p256.key" in e.value.hint and e.value.context
    with pytest.raises(Error, match="Ed25519") as e:
        signature.load_public_key(pub)
    assert "P-256" in e.value.message and "bundle-p256.pub" in e.value.hint


def test_garbage_and_encrypted_keys(tmp_path, keys) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(Error, match="not a PEM"):
        signature.load_private_key(junk)
    with pytest.raises(Error, match="not a PEM"):
        signature.load_public_key(junk)
    key = signature.load_private_key(keys[0])
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(Error, match="encrypted"):
        signature.load_private_key(enc)


# ---- the ECDSA P-256 pair (second signature, for openssl 1.0.2) --------------------------------------


@pytest.fixture()
def all_keys(tmp_path):
    return signature.generate_keys(tmp_path / "keys")


def test_generate_keys_writes_four_files_with_their_modes(all_keys) -> None:
    assert [p.name for p in all_keys] == ["bundle.key", "bundle.pub", "bundle-p256.key", "bundle-p256.pub"]
    for private in (all_keys.key, all_keys.p256_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    for public in (all_keys.pub, all_keys.p256_pub):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644
        assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    assert signature.key_type(signature.load_public_key(all_keys.pub)) == "Ed25519"
    p256 = signature.load_public_key(all_keys.p256_pub)
    assert signature.key_type(p256) == "P-256" and isinstance(p256.curve, ec.SECP256R1)
    assert signature.load_p256_private_key(all_keys.p256_key).public_key().public_numbers() == p256.public_numbers()


@pytest.mark.parametrize("existing", ["bundle.key", "bundle.pub", "bundle-p256.key", "bundle-p256.pub"])
def test_generate_keys_refuses_if_any_of_the_four_exists_and_writes_none(tmp_path, existing) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    (out / existing).write_text("mine")
    with pytest.raises(Error, match="overwrite") as e:
        signature.generate_keys(out)
    assert existing in e.value.message and e.value.hint
    assert os.listdir(out) == [existing] and (out / existing).read_text() == "mine"


def test_generate_keys_removes_what_it_wrote_when_a_write_fails(tmp_path, monkeypatch) -> None:
    real = signature._write_new

    def fail_on_the_last(path, data, mode):
        if path.name == "bundle-p256.pub":
            raise OSError("disk full")
        real(path, data, mode)

    monkeypatch.setattr(signature, "_write_new", fail_on_the_last)
    with pytest.raises(OSError):
        signature.generate_keys(tmp_path / "keys")
    assert os.listdir(tmp_path / "keys") == []


def test_old_key_directories_have_no_p256_key(keys) -> None:
    assert sorted(p.name for p in keys[0].parent.iterdir()) == ["bundle.key", "bundle.pub"]


def test_p256_sign_and_verify(all_keys) -> None:
    private = signature.load_p256_private_key(all_keys.p256_key)
    public = signature.load_public_key(all_keys.p256_pub)
    sig = signature.sign_p256(private, b"manifest bytes")
    assert sig[0] == 0x30 and len(sig) <= signature.P256_MAX_SIGNATURE_SIZE  # DER SEQUENCE
    assert signature.sign_p256(private, b"manifest bytes") == sig  # deterministic: same bytes, same bundle
    signature.verify(public, b"manifest bytes", sig)
    with pytest.raises(Error, match="P-256 signature of manifest.json .manifest.sig.p256. does not verify"):
        signature.verify(public, b"manifest bytez", sig)
    with pytest.raises(Error, match="at most 72"):
        signature.verify(public, b"manifest bytes", sig + b"\0" * 40)
    ed = signature.load_public_key(all_keys.pub)
    with pytest.raises(Error, match="Ed25519 signature"):  # an Ed25519 key checks only Ed25519 signatures
        signature.verify(ed, b"manifest bytes", sig)


def test_p256_fingerprint_is_sha256_of_the_uncompressed_point(all_keys) -> None:
    public = signature.load_public_key(all_keys.p256_pub)
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert len(point) == 65 and point[0] == 4
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(point).digest()).decode().rstrip("=")
    assert signature.fingerprint(public) == expected
    assert signature.fingerprint(signature.load_p256_private_key(all_keys.p256_key).public_key()) == expected


def test_keys_given_for_the_wrong_role(all_keys) -> None:
    with pytest.raises(Error, match="Ed25519") as e:
        signature.load_private_key(all_keys.p256_key)
    assert "--p256-key" in e.value.hint
    with pytest.raises(Error, match="P-256"):
        signature.load_p256_private_key(all_keys.key)
    with pytest.raises(Error, match="public key") as e:
        signature.load_p256_private_key(all_keys.p256_pub)
    assert "bundle-p256.key" in e.value.hint
    with pytest.raises(Error, match="private key"):
        signature.load_public_key(all_keys.p256_key)


def test_p256_garbage_and_encrypted_keys(tmp_path, all_keys) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(Error, match="not a PEM"):
        signature.load_p256_private_key(junk)
    with pytest.raises(Error, match="does not exist"):
        signature.load_p256_private_key(tmp_path / "nope.key")
    key = signature.load_p256_private_key(all_keys.p256_key)
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(Error, match="encrypted"):
        signature.load_p256_private_key(enc)


def test_p256_public_key_in_the_manifest_round_trips(all_keys) -> None:
    public = signature.load_public_key(all_keys.p256_pub)
    text = signature.encode_p256_public(public)
    assert signature.same_key(signature.decode_p256_public(text), public)
    der = base64.b64decode(text)
    assert serialization.load_der_public_key(der).public_numbers() == public.public_numbers()
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    bad = base64.b64encode(other.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    for value, why in (("not base64!", "base64"), (base64.b64encode(b"junk").decode(), "DER"),
                       (bad, "not P-256"), (text + "\n", "base64")):
        with pytest.raises(ValueError, match=why):
            signature.decode_p256_public(value)
