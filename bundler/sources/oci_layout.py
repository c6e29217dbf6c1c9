"""The bundle's ONE OCI image layout: index.json (see contract/oci.py), oci-layout, each blob once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from bundler.sources.images import Blob, ImageArtifact, _hex, parse_platform
from contract import oci
from contract.errors import Error
from contract.oci import COMPAT_FOR, ORIGINAL_REF, REF_NAME
from contract.reference import parse_ref


def ref_name(ref: str) -> str:
    """The name an image has in the layout: its full normalized reference (docker.io/coredns/coredns:1.1.3),
    unambiguous even when two images share a tag."""
    return str(parse_ref(ref))


def as_blob(blob) -> Blob:
    """(digest, size, media_type) from a tuple or from an object with those fields (the lock's LockedBlob)."""
    if isinstance(blob, (tuple, list)):
        return tuple(blob)
    return blob.digest, blob.size, blob.media_type


def _platform(text: str) -> dict:
    p = parse_platform(text)
    return {k: v for k, v in (("architecture", p["architecture"]), ("os", p["os"]), ("variant", p["variant"]))
            if v}


def wrapper_index(a: ImageArtifact) -> bytes:
    """A one-entry OCI index whose only child is a Docker schema 2 manifest, with its type and platform: what
    skopeo 1.9 finds by name and reads the manifest through (its own digest is not the image's)."""
    child = {"mediaType": a.media_type, "digest": a.digest, "size": a.size, "platform": _platform(a.platforms[0])}
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [child], "annotations": {COMPAT_FOR: a.digest}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _index(artifacts: Sequence[ImageArtifact]) -> tuple[bytes, dict[str, bytes]]:
    """index.json and the wrapper blobs it names (sha256 hex -> bytes)."""
    by_name = {ref_name(a.ref): a for a in artifacts}
    entries, extra = [], {}
    for name in sorted(by_name):
        a = by_name[name]
        annotations = {REF_NAME: name, ORIGINAL_REF: a.ref}
        entries.append({"mediaType": a.media_type, "digest": a.digest, "size": a.size, "annotations": annotations})
        compat = dict(annotations, **{COMPAT_FOR: a.digest})
        if a.media_type == oci.DOCKER_MANIFEST:
            body = wrapper_index(a)
            sha = hashlib.sha256(body).hexdigest()
            extra[sha] = body
            entries.append({"mediaType": oci.OCI_INDEX, "digest": f"sha256:{sha}", "size": len(body),
                            "annotations": compat})
        elif a.media_type == oci.DOCKER_LIST:
            entries.append({"mediaType": oci.OCI_INDEX, "digest": a.digest, "size": a.size, "annotations": compat})
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries}
    return json.dumps(index, indent=2, sort_keys=True).encode() + b"\n", extra


def index_json(artifacts: Sequence[ImageArtifact]) -> bytes:
    """The layout's index.json (artifacts or LockedImages)."""
    return _index(artifacts)[0]


def layout_entries(artifacts: Sequence[ImageArtifact], cache) -> list[tuple[str, Path | bytes, int, str]]:
    """(path in the layout, cache file or bytes, size, sha256 hex) of every file of the layout, each blob once."""
    index, wrappers = _index(artifacts)
    out: list = [(oci.LAYOUT_FILE, oci.LAYOUT_VERSION, len(oci.LAYOUT_VERSION), hashlib.sha256(oci.LAYOUT_VERSION).hexdigest()),
                 (oci.INDEX_FILE, index, len(index), hashlib.sha256(index).hexdigest())]
    blobs: dict = {}
    for a in artifacts:
        for digest, size, _mt in map(as_blob, a.blobs):
            blobs.setdefault(_hex(digest), (size, a.ref))
    missing = [f"{h} ({ref})" for h, (size, ref) in sorted(blobs.items()) if not cache.has(h, size)]
    if missing:
        raise Error(f"{len(missing)} image blob{'s are' if len(missing) > 1 else ' is'} not in the cache",
                    context="writing the OCI image layout", details=missing[:20],
                    hint="run the fetch step (bundler build fetches what is missing)")
    for h in sorted(set(blobs) | set(wrappers)):
        if h in wrappers:
            out.append((f"blobs/sha256/{h}", wrappers[h], len(wrappers[h]), h))
        else:
            out.append((f"blobs/sha256/{h}", cache.path(h), blobs[h][0], h))
    return out


def write_layout(artifacts: Sequence[ImageArtifact], cache, out_dir: Path) -> list[Path]:
    """Write one OCI image layout holding every image (blobs hard-linked from the cache when possible)."""
    out_dir = Path(out_dir)
    (out_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    written = []
    for path, src, _size, _sha in layout_entries(artifacts, cache):
        dest = out_dir / path
        if isinstance(src, bytes):
            dest.write_bytes(src)
        elif not dest.exists():
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
        written.append(dest)
    return written
