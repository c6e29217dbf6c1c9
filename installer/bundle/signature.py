"""Ed25519 keys and signatures over the exact manifest bytes (checkable with `openssl pkeyutl -rawin`).

Fingerprints are 'SHA256:' + unpadded base64 of sha256 over the 32 raw public key bytes,
the style of `ssh-keygen -l`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from installer.errors import Error

PRIVATE_KEY_FILE = "bundle.key"
PUBLIC_KEY_FILE = "bundle.pub"
SIGNATURE_SIZE = 64

PathLike = Union[str, "os.PathLike[str]"]


def generate_keypair(out_dir: PathLike) -> tuple[Path, Path]:
    """Write bundle.key (0600, PKCS#8 PEM) and bundle.pub (SubjectPublicKeyInfo PEM); never overwrite."""
    out = Path(out_dir)
    key_path, pub_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    existing = [str(p) for p in (key_path, pub_path) if os.path.lexists(p)]
    if existing:
        raise Error(
            f"refusing to overwrite an existing signing key: {', '.join(existing)}",
            context="generating the bundle signing key pair",
            hint="bundles signed with the old key would no longer verify; move the files away first "
            "or choose another directory",
        )
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(key_path, private_pem, 0o600)
    try:
        _write_new(pub_path, public_pem, 0o644)
    except BaseException:
        key_path.unlink()
        raise
    return key_path, pub_path


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
                    hint="generate a key pair with `bundler keygen` or pass the right path") from None
    except OSError as e:
        raise Error(f"cannot read {what} {path}: {e.strerror}") from None


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; Errors for a missing file, a public key or another key type."""
    data = _read_pem(path, "private key")
    if b"PUBLIC KEY-----" in data:
        raise Error(f"{path} holds a public key, but signing needs the private key",
                    hint=f"pass the {PRIVATE_KEY_FILE} file, not {PUBLIC_KEY_FILE}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise Error(f"private key {path} is encrypted", hint="use an unencrypted PKCS#8 Ed25519 key") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Error(f"{path} is not a PEM private key: {e}",
                    hint="generate a key pair with `bundler keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise Error(f"{path} holds a {_key_type(key)} key, but bundles are signed with Ed25519",
                    hint="generate an Ed25519 key pair with `bundler keygen`")
    return key


def load_public_key(path: PathLike) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file; Errors for a missing file, a private key or another key type."""
    data = _read_pem(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise Error(f"{path} holds a private key; verifying needs only the public key",
                    hint=f"pass the {PUBLIC_KEY_FILE} file and keep {PRIVATE_KEY_FILE} off this host")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Error(f"{path} is not a PEM public key: {e}", hint=f"pass the {PUBLIC_KEY_FILE} file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Error(f"{path} holds a {_key_type(key)} key, but bundles are signed with Ed25519",
                    hint=f"pass the {PUBLIC_KEY_FILE} that `bundler keygen` wrote")
    return key


def _key_type(key: object) -> str:
    """A short name for a key's algorithm, e.g. 'RSA'."""
    name = type(key).__name__
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.replace(suffix, "")
    return name.lstrip("_") or "different"


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature of `data`."""
    return private_key.sign(data)


def verify(public_key: Ed25519PublicKey, data: bytes, sig: bytes, *, what: str = "manifest.json") -> None:
    """Raise Error unless `sig` is public_key's signature of `data`."""
    if len(sig) != SIGNATURE_SIZE:
        raise Error(f"signature of {what} is {len(sig)} bytes, an Ed25519 signature is {SIGNATURE_SIZE}",
                    hint="the bundle is damaged or not a bundle; copy it again")
    try:
        public_key.verify(sig, data)
    except InvalidSignature:
        raise Error(
            f"signature of {what} does not verify with key {fingerprint(public_key)}",
            hint="the bundle was modified or signed with another key; check you have the right bundle.pub "
            "and copy the bundle again",
        ) from None


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """'SHA256:' + unpadded base64 of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")
