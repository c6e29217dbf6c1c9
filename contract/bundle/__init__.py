"""The bundle format: the one place both the bundler and the installer learn what a bundle is."""

from __future__ import annotations

from contract.bundle import layout
from contract.bundle.archive import (
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
from contract.bundle.contents import Check, Component, ComponentKind, Contents, SourceKind, TrustEntry
from contract.bundle.delta import BaseDir, Delta
from contract.bundle.delta import summary as delta_summary
from contract.bundle.layout import kind_of
from contract.bundle.manifest import FileEntry, Manifest
from contract.bundle.parts import Part, PartsIndex
from contract.bundle.signature import (
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
from contract.bundle.verify import VerifyReport, read_signed_head, verify_bundle

__all__ = [
    "DEFAULT_LEVEL",
    "BaseDir",
    "BundleResult",
    "Check",
    "Component",
    "ComponentKind",
    "Contents",
    "Delta",
    "Entry",
    "FileEntry",
    "KeyFiles",
    "Manifest",
    "Part",
    "PartsIndex",
    "PublicKey",
    "SourceKind",
    "TrustEntry",
    "VerifyReport",
    "check_level",
    "delta_summary",
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
