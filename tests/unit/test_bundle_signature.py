"""Ed25519 key files, signatures and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from installer.bundle import signature
from installer.errors import Error


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
                                  lambda: ec.generate_private_key(ec.SECP256R1())])
def test_other_key_types_are_refused(tmp_path, make) -> None:
    priv, pub = _pem_files(tmp_path, make())
    with pytest.raises(Error, match="Ed25519"):
        signature.load_private_key(priv)
    with pytest.raises(Error, match="Ed25519"):
        signature.load_public_key(pub)


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
