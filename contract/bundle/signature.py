"""Bundle signing keys and the signatures over the exact manifest bytes.

Two signatures over the same bytes:

- Ed25519 (manifest.sig, raw 64 bytes), checkable with `openssl pkeyutl -verify -rawin` (OpenSSL >= 3.0);
- ECDSA P-256 with SHA-256 (manifest.sig.p256, DER), checkable with `openssl dgst -sha256 -verify` down to
  OpenSSL 1.0.2 (CentOS 7), whose openssl knows no Ed25519. Optional: bundles signed before it, or with a
  key directory without bundle-p256.key, carry the Ed25519 signature only.

Fingerprints are 'SHA256:' + unpadded base64 of sha256 over the raw public key bytes (the 32 key bytes
for Ed25519, the 65-byte uncompressed point 04||X||Y for P-256), the style of `ssh-keygen -l`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import NamedTuple, Optional, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.bundle import layout
from contract.errors import Error

PRIVATE_KEY_FILE = "bundle.key"
PUBLIC_KEY_FILE = "bundle.pub"
P256_PRIVATE_KEY_FILE = "bundle-p256.key"
P256_PUBLIC_KEY_FILE = "bundle-p256.pub"
SIGNATURE_SIZE = 64
P256_MAX_SIGNATURE_SIZE = 72  # DER SEQUENCE of two INTEGERs of at most 33 bytes each
ED25519 = "Ed25519"
P256 = "P-256"

PathLike = Union[str, "os.PathLike[str]"]
PublicKey = Union[Ed25519PublicKey, ec.EllipticCurvePublicKey]  # an Ed25519 key, or an EC key on P-256
P256PrivateKey = ec.EllipticCurvePrivateKey  # on P-256 (load_p256_private_key checks the curve)
P256PublicKey = ec.EllipticCurvePublicKey


class KeyFiles(NamedTuple):
    """The four files `bundler keygen` writes."""

    key: Path
    pub: Path
    p256_key: Path
    p256_pub: Path


def generate_keys(out_dir: PathLike) -> KeyFiles:
    """Write bundle.key/bundle.pub (Ed25519) and bundle-p256.key/bundle-p256.pub (ECDSA P-256): private keys
    0600 PKCS#8 PEM, public keys SubjectPublicKeyInfo PEM. All or nothing: refuses if any of the four exists."""
    out = Path(out_dir)
    files = KeyFiles(out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE,
                     out / P256_PRIVATE_KEY_FILE, out / P256_PUBLIC_KEY_FILE)
    _write_pairs(out, [(files.key, files.pub, Ed25519PrivateKey.generate()),
                       (files.p256_key, files.p256_pub, ec.generate_private_key(ec.SECP256R1()))])
    return files


def generate_keypair(out_dir: PathLike) -> tuple[Path, Path]:
    """Write the Ed25519 pair alone, bundle.key and bundle.pub (a key directory as older bundlers made it)."""
    out = Path(out_dir)
    key_path, pub_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    _write_pairs(out, [(key_path, pub_path, Ed25519PrivateKey.generate())])
    return key_path, pub_path


def _write_pairs(out: Path, pairs: list) -> None:
    """Write each (private path, public path, private key); none if any file exists, and none left on failure."""
    paths = [p for key_path, pub_path, _ in pairs for p in (key_path, pub_path)]
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing:
        raise Error(
            f"refusing to overwrite an existing signing key: {', '.join(existing)}",
            context="generating the bundle signing keys",
            hint="bundles signed with the old keys would no longer verify; move the files away first "
            "or choose another directory",
        )
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for key_path, pub_path, key in pairs:
            private_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for path, data, mode in ((key_path, private_pem, 0o600), (pub_path, public_pem, 0o644)):
                _write_new(path, data, mode)
                written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (O_EXCL), so a private key is never readable by others."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise Error(f"refusing to overwrite {path}", hint="move the existing file away first") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have narrowed it
        f.write(data)


def _read_pem(path: PathLike, what: str) -> bytes:
    """The bytes of a key file, or an Error that says which file and why."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise Error(f"{what} {path} does not exist",
                    hint="generate the keys with `bundler keygen` or pass the right path") from None
    except IsADirectoryError:
        raise Error(f"{what} {path} is a directory", hint="pass the key file itself") from None
    except OSError as e:
        raise Error(f"cannot read {what} {path}: {e.strerror}") from None


def _load_private(path: PathLike, expected: str, file_name: str) -> object:
    """Whatever private key a PEM file holds; Errors for a missing file, a public key, encryption, garbage."""
    data = _read_pem(path, "private key")
    if b"PUBLIC KEY-----" in data:
        raise Error(f"{path} holds a public key, but signing needs the private key",
                    context="loading the bundle signing key",
                    hint=f"pass the {file_name} file, not the .pub beside it")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise Error(f"private key {path} is encrypted", context="loading the bundle signing key",
                    hint=f"use an unencrypted PKCS#8 {expected} key") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Error(f"{path} is not a PEM private key: {e}", context="loading the bundle signing key",
                    hint="generate the keys with `bundler keygen`") from None


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; Errors for a missing file, a public key or another key type."""
    key = _load_private(path, ED25519, PRIVATE_KEY_FILE)
    if not isinstance(key, Ed25519PrivateKey):
        hint = "generate the keys with `bundler keygen`"
        if _is_p256(key):
            hint = (f"this is a P-256 key: pass it with --p256-key (or leave it beside {PRIVATE_KEY_FILE} as "
                    f"{P256_PRIVATE_KEY_FILE}), and the Ed25519 {PRIVATE_KEY_FILE} with --key")
        raise Error(f"{path} holds {_a_key_type(key)} key, but bundles are signed with Ed25519",
                    context="loading the bundle signing key", hint=hint)
    return key


def load_p256_private_key(path: PathLike) -> P256PrivateKey:
    """The ECDSA P-256 private key in a PEM file; Errors for a missing file, a public key, another type or curve."""
    key = _load_private(path, "ECDSA P-256", P256_PRIVATE_KEY_FILE)
    if not _is_p256(key):
        raise Error(f"{path} holds {_a_key_type(key)} key, but the second signature needs an ECDSA P-256 key",
                    context="loading the P-256 signing key",
                    hint=f"pass the {P256_PRIVATE_KEY_FILE} that `bundler keygen` wrote")
    return key


def load_public_key(path: PathLike) -> PublicKey:
    """The Ed25519 or ECDSA P-256 public key in a PEM file; Errors for a private key or another key type."""
    data = _read_pem(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise Error(f"{path} holds a private key; verifying needs only the public key",
                    hint=f"pass the {PUBLIC_KEY_FILE} (or {P256_PUBLIC_KEY_FILE}) file and keep the private "
                    "keys off this host")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Error(f"{path} is not a PEM public key: {e}", hint=f"pass the {PUBLIC_KEY_FILE} file") from None
    if not isinstance(key, Ed25519PublicKey) and not _is_p256(key):
        raise Error(f"{path} holds {_a_key_type(key)} key, but bundles are signed with Ed25519 (and ECDSA P-256)",
                    hint=f"pass the {PUBLIC_KEY_FILE} or {P256_PUBLIC_KEY_FILE} that `bundler keygen` wrote")
    return key


def _is_p256(key: object) -> bool:
    """Whether `key` is an EC key (private or public) on the NIST P-256 curve."""
    return (isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
            and isinstance(key.curve, ec.SECP256R1))


def is_p256(public_key: PublicKey) -> bool:
    """Whether a loaded public key is the P-256 one (else it is Ed25519)."""
    return _is_p256(public_key)


def key_type(public_key: PublicKey) -> str:
    """'Ed25519' or 'P-256'."""
    return P256 if _is_p256(public_key) else ED25519


def _key_type(key: object) -> str:
    """A short name for a key's algorithm, e.g. 'RSA', 'EC secp384r1'."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}"
    name = type(key).__name__
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.replace(suffix, "")
    return name.lstrip("_") or "different"


def _a_key_type(key: object) -> str:
    """_key_type with its article: 'an Ed25519', 'an EC secp384r1', 'a RSA'."""
    name = _key_type(key)
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature of `data`."""
    return private_key.sign(data)


def sign_p256(private_key: P256PrivateKey, data: bytes) -> bytes:
    """The DER ECDSA P-256 / SHA-256 signature of `data`: deterministic (RFC 6979), so the same manifest
    gives the same bundle bytes, where cryptography and its OpenSSL support it (else a random nonce)."""
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    except (TypeError, UnsupportedAlgorithm):  # cryptography < 44, or its OpenSSL < 3.2
        algorithm = ec.ECDSA(hashes.SHA256())
    return private_key.sign(data, algorithm)


def verify(public_key: PublicKey, data: bytes, sig: bytes, *, what: str = layout.MANIFEST,
           member: Optional[str] = None) -> None:
    """Raise Error unless `sig` is public_key's signature of `data`: the raw Ed25519 signature (manifest.sig)
    for an Ed25519 key, the DER ECDSA P-256 / SHA-256 signature (manifest.sig.p256) for a P-256 key.
    `member` names the file the signature came from in messages (default: the manifest's signature member)."""
    kind, default = (P256, layout.SIGNATURE_P256) if _is_p256(public_key) else (ED25519, layout.SIGNATURE)
    member = member or default
    size_ok = 8 <= len(sig) <= P256_MAX_SIGNATURE_SIZE if kind == P256 else len(sig) == SIGNATURE_SIZE
    if not size_ok:
        expected = (f"a {P256} signature is at most {P256_MAX_SIGNATURE_SIZE}" if kind == P256
                    else f"an {ED25519} signature is {SIGNATURE_SIZE}")
        raise Error(f"the {kind} signature of {what} ({member}) is {len(sig)} bytes, {expected}",
                    context="verifying the bundle signature",
                    hint="the bundle is damaged or not a bundle; copy it again")
    try:
        if kind == P256:
            public_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(sig, data)
    except InvalidSignature:
        raise Error(
            f"the {kind} signature of {what} ({member}) does not verify with key {fingerprint(public_key)}",
            context="verifying the bundle signature",
            hint=f"the bundle was modified or signed with another key; check you have the right "
            f"{P256_PUBLIC_KEY_FILE if kind == P256 else PUBLIC_KEY_FILE} and copy the bundle again",
        ) from None


def fingerprint(public_key: PublicKey) -> str:
    """'SHA256:' + unpadded base64 of sha256 over the raw public key (Ed25519: 32 bytes; P-256: the 65-byte
    uncompressed point)."""
    if _is_p256(public_key):
        raw = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")


def encode_p256_public(public_key: P256PublicKey) -> str:
    """Base64 of the DER SubjectPublicKeyInfo: how the manifest names its P-256 signer (signer_p256)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def decode_p256_public(text: str) -> P256PublicKey:
    """The P-256 public key of a manifest's signer_p256; ValueError saying why when it is not one."""
    try:
        der = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("is not base64") from None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a DER SubjectPublicKeyInfo") from None
    if not _is_p256(key):
        raise ValueError(f"is {_a_key_type(key)} key, not P-256")
    if encode_p256_public(key) != text:
        raise ValueError("is not in canonical form")
    return key


def same_key(a: PublicKey, b: PublicKey) -> bool:
    """Whether two public keys are the same key."""
    if key_type(a) != key_type(b):
        return False
    return fingerprint(a) == fingerprint(b)
