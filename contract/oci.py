"""The OCI contract: media types, the bundle layout's index.json annotations, and how its entries are read.

One definition of every name both programs use. The bundler writes the layout (bundler/sources/oci_layout.py);
the installer reads it (installer/registry/seed.py).

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

# ---- media types
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1"  # +json, +prettyjws
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)  # one platform's manifest
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)  # several platforms
MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)  # every manifest a layout may hold
ACCEPT = ", ".join(IMAGE_MANIFEST_TYPES + INDEX_TYPES)  # what a client asks a registry for

# ---- the image layout
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"

# ---- index.json annotations
REF_NAME = "org.opencontainers.image.ref.name"
ORIGINAL_REF = "io.k8s-offline.ref"
COMPAT_FOR = "io.k8s-offline.compat-for"
MEDIA_TYPE = "io.k8s-offline.media-type"  # older layouts: the true type of an entry listed under its OCI twin
CONTAINERD_IMAGE_NAME = "io.containerd.image.name"  # what `ctr images export` names an image by
# where a reader finds the reference an image was bundled under: as the spec wrote it first, then full ones
ORIGINAL_REF_ANNOTATIONS = (ORIGINAL_REF, CONTAINERD_IMAGE_NAME, REF_NAME)


def compat_for(entry: dict) -> Optional[str]:
    """The digest of the true entry a skopeo-1.9 compatibility entry stands for; None for a true entry."""
    return (entry.get("annotations") or {}).get(COMPAT_FOR)


def listed_media_type(entry: dict) -> str:
    """The media type an entry gives its manifest (the true one, for older layouts' twin-typed entries)."""
    return (entry.get("annotations") or {}).get(MEDIA_TYPE) or entry.get("mediaType", "")
