"""The index.json of the bundle's OCI image layout: the annotations the bundler writes and the installer reads.

Each image has one entry of its true media type, named by `org.opencontainers.image.ref.name` (the full
normalized reference) and `io.k8s-offline.ref` (the reference as the spec wrote it); the upstream bytes are
kept, so its digest is the upstream's. That is what the OCI image spec asks and what current tools read.

skopeo 1.9 (Debian 12) finds `oci:DIR:NAME` only among entries of the two OCI types, and reads a manifest
by the type of the entry that names it. So a Docker image also gets a second entry with the same name,
marked COMPAT_FOR (the digest of the true entry it stands for), listed after the true one:
  - a Docker schema 2 manifest: a one-entry OCI index (a small extra blob) whose only child is the upstream
    manifest with its Docker type and platform; skopeo picks that child and copies it byte for byte;
  - a Docker manifest list: the same list under the OCI index type (skopeo reads the two alike).
Readers that push images (installer seed) skip COMPAT_FOR entries: they add no image.

Layouts written before the COMPAT_FOR entries listed a Docker manifest under its OCI twin type with its true
type in MEDIA_TYPE; readers still accept them.
"""

from __future__ import annotations

from typing import Optional

REF_NAME = "org.opencontainers.image.ref.name"
ORIGINAL_REF = "io.k8s-offline.ref"
COMPAT_FOR = "io.k8s-offline.compat-for"
MEDIA_TYPE = "io.k8s-offline.media-type"  # older layouts: the true type of an entry listed under its OCI twin


def compat_for(entry: dict) -> Optional[str]:
    """The digest of the true entry a skopeo-1.9 compatibility entry stands for; None for a true entry."""
    return (entry.get("annotations") or {}).get(COMPAT_FOR)


def listed_media_type(entry: dict) -> str:
    """The media type an entry gives its manifest (the true one, for older layouts' twin-typed entries)."""
    return (entry.get("annotations") or {}).get(MEDIA_TYPE) or entry.get("mediaType", "")
