"""The stand-in apiserver's encryption at rest writes what the real 1.10 aescbc provider writes (checked here with
the cryptography package, independently of openssl) and reads both that and plain JSON (identity)."""

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.fixtures.standins import _runtime as rt

KEY = os.urandom(32)
DOC = {"kind": "EncryptionConfig", "apiVersion": "v1", "resources": [{"resources": ["secrets"], "providers": [
    {"aescbc": {"keys": [{"name": "k8s-offline-1", "secret": base64.b64encode(KEY).decode()}]}},
    {"identity": {}}]}]}


def test_secrets_are_stored_as_the_real_aescbc_provider_stores_them():
    enc = rt.Encryption(DOC)
    plain = json.dumps({"kind": "Secret", "data": {"password": "c2VjcmV0"}}).encode()
    stored = enc.encode("secrets", plain)
    prefix = b"k8s:enc:aescbc:v1:k8s-offline-1:"
    assert stored.startswith(prefix) and b"c2VjcmV0" not in stored
    iv, body = stored[len(prefix):len(prefix) + 16], stored[len(prefix) + 16:]
    d = Cipher(algorithms.AES(KEY), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    assert unpad.update(d.update(body) + d.finalize()) + unpad.finalize() == plain
    assert enc.decode("secrets", stored) == plain
    assert enc.encode("secrets", plain) != stored  # a fresh IV every write


def test_plain_values_still_read_through_identity_and_other_resources_stay_plain():
    enc = rt.Encryption(DOC)
    assert enc.decode("secrets", b'{"a": 1}') == b'{"a": 1}'
    assert enc.encode("configmaps", b'{"a": 1}') == b'{"a": 1}'
    no_identity = {"resources": [{"resources": ["secrets"], "providers": DOC["resources"][0]["providers"][:1]}]}
    with pytest.raises(rt.EncryptionError):
        rt.Encryption(no_identity).decode("secrets", b'{"a": 1}')


def test_a_value_under_an_unknown_key_and_a_bad_config_are_errors():
    enc = rt.Encryption(DOC)
    other = dict(DOC, resources=[{"resources": ["secrets"], "providers": [
        {"aescbc": {"keys": [{"name": "other", "secret": base64.b64encode(os.urandom(32)).decode()}]}}]}])
    with pytest.raises(rt.EncryptionError, match="no key named"):
        enc.decode("secrets", rt.Encryption(other).encode("secrets", b"{}"))
    bad = dict(DOC, resources=[{"resources": ["secrets"], "providers": [
        {"aescbc": {"keys": [{"name": "k", "secret": base64.b64encode(b"short").decode()}]}}]}])
    with pytest.raises(rt.EncryptionError, match="16, 24 or 32"):
        rt.Encryption(bad)
