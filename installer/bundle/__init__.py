"""The bundle format: the one place both the bundler and the installer learn what a bundle is."""

from __future__ import annotations

from installer.bundle import layout
from installer.bundle.archive import (
    DEFAULT_LEVEL,
    BundleResult,
    Entry,
    check_level,
    inspect_bundle,
    open_stream,
    parse_size,
    read_manifest,
    unpack_bundle,
    write_bundle,
)
from installer.bundle.layout import kind_of
from installer.bundle.manifest import FileEntry, Manifest
from installer.bundle.parts import Part, PartsIndex
from installer.bundle.signature import (
    KeyFiles,
    PublicKey,
    fingerprint,
    generate_keypair,
    generate_keys,
    key_type,
    load_p256_private_key,
    load_private_key,
    load_public_key,
    sign,
    sign_p256,
    verify,
)
from installer.bundle.verify import VerifyReport, read_signed_head, verify_bundle

__all__ = [
    "DEFAULT_LEVEL",
    "BundleResult",
    "Entry",
    "FileEntry",
    "KeyFiles",
    "Manifest",
    "Part",
    "PartsIndex",
    "PublicKey",
    "VerifyReport",
    "check_level",
    "fingerprint",
    "generate_keypair",
    "generate_keys",
    "inspect_bundle",
    "key_type",
    "kind_of",
    "layout",
    "load_p256_private_key",
    "load_private_key",
    "load_public_key",
    "open_stream",
    "parse_size",
    "read_manifest",
    "read_signed_head",
    "sign",
    "sign_p256",
    "unpack_bundle",
    "verify",
    "verify_bundle",
    "write_bundle",
]
