"""Every name inside a bundle, and the names of a bundle's files on disk: the one place that knows them."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Optional

from contract import oci
from contract.errors import Error

FORMAT_VERSION = 2  # the manifest format written (contract.bundle.manifest reads 1 too)

# The first members of the tar stream, in this order: the manifest, its Ed25519 signature, and (when the
# bundle was also signed with a P-256 key, for openssl 1.0.2 hosts) its ECDSA P-256 signature.
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNATURE_P256 = "manifest.sig.p256"  # optional; only ever the third member
DELTA = "delta.json"  # delta bundles only (contract/bundle/delta.py): right after the signature(s)

BINARIES_DIR = "binaries"
RPMS_DIR = "rpms"  # a yum repository: the RPMs plus repodata/
RPMS_REPODATA_DIR = "rpms/repodata"
RPMS_UNCHECKED_DIR = "rpms/unchecked"  # a second yum repository: RPMs of spec repos with gpgcheck off
RPM_KEYS_DIR = "rpms/keys"  # the pinned signing keys of the repos (yum ignores this directory)
RPM_KEY_PREFIX = "RPM-GPG-KEY-k8s-offline-"
IMAGES_DIR = "images"  # ONE OCI image layout holding every image, each blob once
IMAGES_OCI_LAYOUT = f"{IMAGES_DIR}/{oci.LAYOUT_FILE}"
IMAGES_INDEX = f"{IMAGES_DIR}/{oci.INDEX_FILE}"
IMAGES_BLOBS_DIR = "images/blobs/sha256"
MANIFESTS_DIR = "manifests"  # addon manifests (templates)
INSTALLER_DIR = "installer"  # the installer's wheels and its dependencies' wheels

SBOM = "sbom.spdx.json"
LOCK = "bundle-lock.yaml"
SPEC = "bundle-spec.yaml"

META_FILES = (MANIFEST, SIGNATURE, SIGNATURE_P256, DELTA, SBOM, LOCK, SPEC)
RESERVED = (MANIFEST, SIGNATURE, SIGNATURE_P256, DELTA)  # written by the archive itself, never an entry

KINDS = ("binary", "rpm", "image", "manifest", "installer", "meta")
_KIND_OF_DIR = {
    BINARIES_DIR: "binary",
    RPMS_DIR: "rpm",
    IMAGES_DIR: "image",
    MANIFESTS_DIR: "manifest",
    INSTALLER_DIR: "installer",
}

BUNDLE_SUFFIX = ".bundle.tar.zst"
PART_INFIX = ".part"
PARTS_INDEX_SUFFIX = ".parts.json"
# Beside the parts index, its signatures with the bundle's keys (over the exact index bytes, as for the manifest)
PARTS_INDEX_SIG_SUFFIX = ".sig"  # raw Ed25519
PARTS_INDEX_SIG_P256_SUFFIX = ".sig.p256"  # DER ECDSA P-256 / SHA-256; when the bundle has a P-256 signer
_PART_RE = re.compile(r"^(?P<bundle>.+)\.part(?P<index>[0-9]{3,})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def path_problem(path: object) -> Optional[str]:
    """Why `path` is not a safe file path inside a bundle, or None when it is."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if path.startswith("/"):
        return "must be relative, not absolute"
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in path):
        return "must not contain control characters or backslashes"
    if ".." in path.split("/"):
        return "must not contain '..'"
    if posixpath.normpath(path) != path or path == ".":
        return "must be normalized (no '.', '//' or trailing '/')"
    return None


def _join(directory: str, filename: str) -> str:
    """directory/filename, refusing a filename that would leave the directory."""
    path = f"{directory}/{filename}"
    problem = path_problem(filename) or path_problem(path)
    if problem:
        raise Error(f"bad file name {filename!r} for {directory}/: {problem}", context="naming a bundle file")
    return path


def binary_path(filename: str) -> str:
    """Where a binary (kubelet, etcd, ...) lives in the bundle."""
    return _join(BINARIES_DIR, filename)


GZIPPED_TAR_SUFFIXES = (".tar.gz", ".tgz")


def stored_binary_name(upstream_filename: str) -> str:
    """The name a release file has in binaries/: gzip'd tarballs are stored as their plain tar.

    The bundle is compressed as a whole, and the Go executables inside release tarballs share most of
    their code: without its gzip layer each tarball compresses with all the others (about half the
    size). The upstream .tar.gz is verified against its pin when it is downloaded, and the lock and SBOM
    record both hashes. Works on globs too ('etcd-v*-linux-amd64.tar.gz' -> 'etcd-v*-linux-amd64.tar').
    """
    for suffix in GZIPPED_TAR_SUFFIXES:
        if upstream_filename.endswith(suffix):
            return upstream_filename[: -len(suffix)] + ".tar"
    return upstream_filename


def rpm_key_path(repo: str) -> str:
    """Where the signing key of a spec repo lives in the bundle."""
    return _join(RPM_KEYS_DIR, f"{RPM_KEY_PREFIX}{repo}")


def has_unchecked_repo(paths) -> bool:
    """Whether a bundle with these member paths has the second yum repository (gpgcheck off RPMs)."""
    return f"{RPMS_UNCHECKED_DIR}/repodata/repomd.xml" in paths


def rpm_path(filename: str) -> str:
    """Where an RPM or a repodata file (e.g. 'repodata/repomd.xml') lives in the bundle."""
    return _join(RPMS_DIR, filename)


def manifest_path(filename: str) -> str:
    """Where an addon manifest lives in the bundle."""
    return _join(MANIFESTS_DIR, filename)


def installer_path(filename: str) -> str:
    """Where one of the installer's wheels lives in the bundle."""
    return _join(INSTALLER_DIR, filename)


def image_blob(digest: str) -> str:
    """Where an OCI blob lives in the bundle, from 'sha256:<hex>' or '<hex>'."""
    hexdigest = digest.removeprefix("sha256:")
    if not _HEX64.match(hexdigest):
        raise Error(f"bad blob digest {digest!r}: expected sha256:<64 lowercase hex digits>",
                    context="naming an image blob")
    return f"{IMAGES_BLOBS_DIR}/{hexdigest}"


def kind_of(path: str) -> str:
    """The kind of a bundle path: binary, rpm, image, manifest, installer or meta."""
    top, sep, _ = path.partition("/")
    return _KIND_OF_DIR.get(top, "meta") if sep else "meta"


def bundle_filename(name: str, version: str) -> str:
    """The bundle's file name: '<name>-<version>.bundle.tar.zst'."""
    for label, value in (("name", name), ("version", version)):
        if not _NAME_RE.match(value):
            raise Error(f"bad bundle {label} {value!r}",
                        hint="use letters, digits, '.', '_', '+' and '-', starting with a letter or digit")
    return f"{name}-{version}{BUNDLE_SUFFIX}"


def delta_filename(name: str, version: str, base_version: str) -> str:
    """A delta bundle's file name: '<name>-<version>.delta-from-<base version>.bundle.tar.zst'."""
    bundle = bundle_filename(name, version)
    if not _NAME_RE.match(base_version):
        raise Error(f"bad base version {base_version!r}", context="naming a delta bundle")
    return f"{bundle[: -len(BUNDLE_SUFFIX)]}.delta-from-{base_version}{BUNDLE_SUFFIX}"


def part_filename(bundle: str, index: int) -> str:
    """The name of split part `index` (0-based) of bundle file name `bundle`: '<bundle>.part000'."""
    return f"{bundle}{PART_INFIX}{index:03d}"


def parts_index_filename(bundle: str) -> str:
    """The name of the index listing a split bundle's parts: '<bundle>.parts.json'."""
    return f"{bundle}{PARTS_INDEX_SUFFIX}"


def parts_index_signature_filenames(bundle: str) -> tuple[str, str]:
    """(Ed25519, P-256) signature file names of a split bundle's parts index: '<bundle>.parts.json.sig[.p256]'."""
    index = parts_index_filename(bundle)
    return index + PARTS_INDEX_SIG_SUFFIX, index + PARTS_INDEX_SIG_P256_SUFFIX


def parse_part_filename(filename: str) -> Optional[tuple[str, int]]:
    """(bundle file name, part index) for a part's file name, or None when it is not a part."""
    m = _PART_RE.match(filename)
    return (m.group("bundle"), int(m.group("index"))) if m else None


def bundle_of_index(filename: str) -> Optional[str]:
    """The bundle file name a parts index file name belongs to, or None."""
    if filename.endswith(PARTS_INDEX_SUFFIX) and len(filename) > len(PARTS_INDEX_SUFFIX):
        return filename[: -len(PARTS_INDEX_SUFFIX)]
    return None


def find_binary(bundle_dir, upstream_pattern: str) -> Optional[Path]:
    """The last (by name) file of an unpacked bundle's binaries/ matching an upstream file name glob, as
    stored (plain tar) or as downloaded (bundles from before tarballs were stored plain); None if none."""
    directory = Path(bundle_dir) / BINARIES_DIR
    for pattern in dict.fromkeys((stored_binary_name(upstream_pattern), upstream_pattern)):
        found = sorted(directory.glob(pattern))
        if found:
            return found[-1]
    return None
