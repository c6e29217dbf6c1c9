"""Images: registry v2 (tokens, mirrors) or a local docker daemon -> verified blobs -> one OCI image layout."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bundler.sources import ProgressLike, as_progress, credentials
from bundler.sources.pull import Endpoint, Registry, client_for, endpoint
from bundler.spec import Image, Mirrors
from contract import oci
from contract.errors import DigestMismatch, Error
from contract.reference import parse_ref
from contract.registry import UnexpectedStatus, sha256_digest

CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

Blob = tuple  # (digest, size, media_type)


@dataclass(frozen=True)
class ImageArtifact:
    """An image pinned by digest with every blob it needs (manifests, index, configs, layers)."""

    ref: str  # as in the spec
    digest: str  # of what is kept: the platform's manifest, or the whole index for several platforms
    media_type: str
    size: int
    platforms: tuple
    blobs: tuple  # ((digest, size, media_type), ...): the top manifest/index first
    source: str = "registry"  # or "docker": exported from a local docker daemon

    def to_dict(self) -> dict:
        out = {"ref": self.ref, "digest": self.digest, "media_type": self.media_type, "size": self.size,
               "platforms": list(self.platforms), "blobs": [list(b) for b in self.blobs]}
        if self.source != "registry":  # the lock's schema only knows registry images so far
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ImageArtifact:
        blobs = tuple((b["digest"], b["size"], b.get("media_type", "")) if isinstance(b, dict) else tuple(b)
                      for b in data["blobs"])
        return cls(ref=data["ref"], digest=data["digest"], media_type=data["media_type"], size=int(data["size"]),
                   platforms=tuple(data.get("platforms") or ()), blobs=blobs,
                   source=data.get("source", "registry"))


# ---------------------------------------------------------------- manifests


def verify_manifest(body: bytes, reference: str, header_digest: str | None, what: str, ep: Endpoint) -> str:
    """The digest of the exact manifest bytes, checked against the digest asked for or announced."""
    digest = sha256_digest(body)
    expected = reference if _DIGEST_RE.match(reference) else header_digest
    if expected and expected != digest:
        raise Error(f"manifest digest mismatch for {ep.upstream}@{reference}: the bytes hash to {digest}, "
                    f"expected {expected}", context=what, details=ep.describe(),
                    hint="the registry or something between us and it altered the manifest; nothing was kept")
    return digest


def media_type_of(body: bytes, header: str | None) -> tuple[str, dict]:
    """(media type, parsed JSON) of a manifest; the document's own mediaType wins over the header."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise Error(f"not a JSON manifest: {e}", context="reading an image manifest") from None
    mt = doc.get("mediaType") or (header or "").split(";")[0].strip()
    if doc.get("schemaVersion") == 1 or mt.startswith(oci.DOCKER_SCHEMA1_PREFIX):
        raise Error("the registry only offers a schema 1 manifest", context="reading an image manifest",
                    hint="schema 1 images cannot be kept with their digest; use a newer tag or registry")
    if mt not in oci.MANIFEST_TYPES:
        mt = oci.OCI_INDEX if "manifests" in doc else oci.OCI_MANIFEST if "layers" in doc else mt
    if mt not in oci.MANIFEST_TYPES:
        raise Error(f"unsupported manifest media type {mt!r}", context="reading an image manifest")
    return mt, doc


def get_manifest(client: Registry, ep: Endpoint, reference: str, what: str) -> tuple[bytes, str, str, dict]:
    """(bytes, digest, media type, document) of a manifest by tag or digest, verified."""
    try:
        body, content_type, header_digest = client.pull_manifest(ep.repository, reference, what, name=ep.upstream)
    except UnexpectedStatus as e:
        if e.status == 404:
            raise Error(f"image not found: {ep.upstream}:{reference}" if not _DIGEST_RE.match(reference)
                        else f"image not found: {ep.upstream}@{reference}",
                        context=what, details=ep.describe(),
                        hint="check the reference in the spec; with a mirror rule, check that the mirror holds "
                             "the image under the rewritten name") from None
        if e.status in (401, 403):
            raise Error(f"access to {ep.name} denied (HTTP {e.status})", context=what,
                        details=ep.describe(), hint=credentials.refused_hint(ep.rule)) from None
        raise Error(e.message, context=what, details=ep.describe()) from None
    digest = verify_manifest(body, reference, header_digest, what, ep)
    mt, doc = media_type_of(body, content_type)
    return body, digest, mt, doc


def parse_platform(text: str) -> dict:
    os_, arch, *variant = text.split("/")
    return {"os": os_, "architecture": arch, "variant": variant[0] if variant else None}


def choose(index: dict, platform: str) -> dict:
    """The descriptor of an index/list for one platform (os/arch[/variant]), or an Error listing what exists."""
    want = parse_platform(platform)
    for d in index.get("manifests", []):
        p = d.get("platform") or {}
        if p.get("os") == want["os"] and p.get("architecture") == want["architecture"] and \
                (want["variant"] is None or p.get("variant") == want["variant"]):
            return d
    have = sorted("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
                  for p in (d.get("platform") or {} for d in index.get("manifests", [])))
    raise Error(f"no {platform} image in the index", details=[f"available: {', '.join(have) or 'none'}"],
                hint="change the image's `platforms` in the spec")


def _blob(desc: dict) -> Blob:
    return (desc["digest"], int(desc["size"]), desc.get("mediaType", ""))


def _image_blobs(doc: dict) -> list[Blob]:
    """Config and layers of an image manifest."""
    return [_blob(doc["config"])] + [_blob(layer) for layer in doc.get("layers", [])]


def resolve(image: Image, mirrors: Mirrors, session) -> ImageArtifact:
    """Pin an image to a digest and list its blobs (registry v2, through mirrors) without downloading layers."""
    if image.source == "docker":
        return _docker_resolve(image)
    ref = image.parsed
    ep = endpoint(ref, mirrors)
    what = f"resolving image {image.ref}"
    client = client_for(ep, session)
    body, digest, mt, doc = get_manifest(client, ep, ref.digest or ref.tag, what)
    platforms = tuple(image.platforms)
    if mt in oci.INDEX_TYPES:
        try:
            chosen = [choose(doc, p) for p in platforms]
        except Error as e:
            raise Error(f"{image.ref}: {e.message}", context=what, details=e.details + ep.describe(),
                        hint=e.hint) from None
        children = []
        for d in chosen:
            cbody, _cdigest, cmt, cdoc = get_manifest(client, ep, d["digest"], what)
            if cmt in oci.INDEX_TYPES:
                raise Error(f"{image.ref}: nested indexes are not supported", context=what)
            children.append(((d["digest"], len(cbody), cmt), cdoc))
        if len(platforms) == 1:
            (top, cdoc), = children
            blobs = [top] + _image_blobs(cdoc)
        else:
            top = (digest, len(body), mt)
            blobs = [top]
            for child, cdoc in children:
                blobs += [child] + _image_blobs(cdoc)
    else:
        top = (digest, len(body), mt)
        blobs = [top] + _image_blobs(doc)
        if len(platforms) > 1:
            raise Error(f"{image.ref} is a single-platform image; the spec asks for {', '.join(platforms)}",
                        context=what, details=ep.describe(), hint="list only the image's platform")
    return ImageArtifact(ref=image.ref, digest=top[0], media_type=top[2], size=top[1], platforms=platforms,
                         blobs=tuple(_unique(blobs)))


def _unique(blobs: Iterable[Blob]) -> list[Blob]:
    seen: set = set()
    out = []
    for b in blobs:
        if b[0] not in seen:
            seen.add(b[0])
            out.append(b)
    return out


# ---------------------------------------------------------------- downloading


def _hex(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise Error(f"unsupported digest {digest!r}", context="copying image blobs",
                    hint="only sha256 digests are supported")
    return digest[len("sha256:"):]


def fetch(artifact: ImageArtifact, mirrors: Mirrors, cache, session, progress: ProgressLike = None) -> dict:
    """Copy every blob of an image into the cache once, verifying each digest while streaming."""
    if artifact.source == "docker":
        return _docker_fetch(artifact, cache)
    ref = parse_ref(artifact.ref)
    ep = endpoint(ref, mirrors)
    client = client_for(ep, session)
    sink = as_progress(progress)
    sink.begin(artifact.ref, len(artifact.blobs), sum(b[1] for b in artifact.blobs))
    downloaded = hits = 0
    try:
        for digest, size, mt in artifact.blobs:
            label = f"{artifact.ref} {digest[:19]}"
            if cache.has(_hex(digest), size):
                hits += 1
                sink.finish(label, cached=True)
                continue
            sink.start(label, size)
            downloaded += _fetch_blob(client, ep, artifact.ref, digest, size, mt, cache,
                                      lambda n, label=label: sink.update(label, n))
            sink.finish(label, cached=False)
    finally:
        sink.end()
    return {"downloaded_bytes": downloaded, "cache_hits": hits}


def _fetch_blob(client: Registry, ep: Endpoint, ref: str, digest: str, size: int, mt: str, cache,
                update: Callable[[int], None]) -> int:
    """Stream one blob (or a manifest, by digest) into the cache; the client retries when the body breaks off."""
    what = f"copying {digest} of {ref}"
    manifest = mt in oci.MANIFEST_TYPES
    kind = "manifest" if manifest else "blob"
    try:
        return client.pull_blob(ep.repository, digest, size,
                                lambda: cache.writer(expected_sha256=_hex(digest), expected_size=size), what,
                                update, manifest=manifest, name=f" of {ref}", details=ep.describe())
    except UnexpectedStatus as e:
        if e.status == 404:
            raise Error(f"{kind} {digest} of {ref} not found", context=what, details=ep.describe(),
                        hint="the registry lost the blob, or the mirror holds another image under that name") \
                from None
        raise
    except DigestMismatch as e:
        raise Error(f"blob {digest} of {ref} does not match its digest: refused", context=what,
                    details=e.details + ep.describe(),
                    hint="the registry or something between us and it altered the blob; nothing was kept") from None


# ---------------------------------------------------------------- images from a local docker daemon


class _Hasher:
    """A cache-writer look-alike that only hashes: resolve computes digests without storing."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0
        self.sha256: str | None = None

    def __enter__(self):
        return self

    def write(self, data: bytes) -> None:
        self._h.update(data)
        self.size += len(data)

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.sha256 = self._h.hexdigest()


@dataclass(frozen=True)
class Converted:
    """A docker-save image as an OCI image manifest (bytes) and its blobs."""

    manifest: bytes
    digest: str
    blobs: tuple  # manifest, config, layers as (digest, size, media_type)


def convert_docker_save(tar_path: Path, ref: str, cache=None) -> Converted:
    """Turn a `docker save` tarball into an OCI manifest + config + gzip'd layers (stored when cache)."""
    writer: Callable[[], Any] = (lambda: cache.writer()) if cache is not None else _Hasher
    what = f"converting the docker export of {ref}"
    if not tarfile.is_tarfile(tar_path):
        raise Error("not a docker save archive (not a tar file)", context=what)
    with tarfile.open(tar_path) as tar:
        try:
            entries = json.load(tar.extractfile("manifest.json"))
        except (KeyError, ValueError, TypeError) as e:
            raise Error(f"the docker save archive has no usable manifest.json: {e}", context=what) from None
        entry = _pick_entry(entries, ref, what)
        config = _member_bytes(tar, entry["Config"], what)
        with writer() as w:
            w.write(config)
        config_digest = "sha256:" + w.sha256
        cfg = json.loads(config)
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(entry["Layers"]):
            raise Error(f"the image config lists {len(diff_ids)} layers, the archive {len(entry['Layers'])}",
                        context=what)
        layers = [_gzip_layer(tar, name, diff_id, writer, what) for name, diff_id in zip(entry["Layers"], diff_ids)]
    # we build this manifest ourselves (no upstream digest to keep): OCI types, which every tool reads;
    # the config bytes are docker's own, so the image ID stays what `docker images` shows
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": oci.OCI_LAYER, "size": size, "digest": digest} for digest, size in layers],
    }
    body = json.dumps(manifest, indent=3).encode()
    with writer() as w:
        w.write(body)
    digest = "sha256:" + w.sha256
    blobs = [(digest, len(body), oci.OCI_MANIFEST), (config_digest, len(config), oci.OCI_CONFIG)]
    blobs += [(d, s, oci.OCI_LAYER) for d, s in layers]
    return Converted(body, digest, tuple(_unique(blobs)))


def _pick_entry(entries: list, ref: str, what: str) -> dict:
    if not isinstance(entries, list) or not entries:
        raise Error("the docker save archive lists no image", context=what)
    want = {ref, str(parse_ref(ref))}
    for e in entries:
        tags = set(e.get("RepoTags") or [])
        if tags & want or {str(parse_ref(t)) for t in tags} & want:
            return e
    if len(entries) == 1:
        return entries[0]
    raise Error(f"the docker save archive holds {len(entries)} images, none tagged {ref}", context=what)


def _member_bytes(tar: tarfile.TarFile, name: str, what: str) -> bytes:
    f = _member(tar, name, what)
    return f.read()


def _member(tar: tarfile.TarFile, name: str, what: str):
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise Error(f"the docker save archive lacks {name}", context=what)
    return f


def _gzip_layer(tar: tarfile.TarFile, name: str, diff_id: str, writer, what: str) -> tuple[str, int]:
    """Compress one layer tar (verifying it against the config's diff_id) into a blob; (digest, size)."""
    src = _member(tar, name, what)
    head = src.read(2)
    raw = hashlib.sha256()
    if head == b"\x1f\x8b":  # already compressed (newer docker): keep the bytes, check what they unpack to
        unz = zlib.decompressobj(wbits=47)
        with writer() as w:
            chunk = head
            while chunk:
                w.write(chunk)
                raw.update(unz.decompress(chunk))
                chunk = src.read(CHUNK)
    else:
        # gzip with a zero mtime and no name: the same layer always gives the same digest
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        with writer() as w:
            chunk = head
            while chunk:
                raw.update(chunk)
                w.write(gz.compress(chunk))
                chunk = src.read(CHUNK)
            w.write(gz.flush())
    if "sha256:" + raw.hexdigest() != diff_id:
        raise Error(f"layer {name} does not match its diff_id {diff_id}", context=what,
                    hint="the docker export is damaged; re-run")
    return "sha256:" + w.sha256, w.size


def _docker_save(ref: str, dest: Path) -> None:
    """Stream `docker save <ref>` from the local daemon into dest."""
    what = f"exporting {ref} from the local docker daemon"
    try:
        import docker
        from docker import errors as docker_errors
    except ImportError:
        raise Error("the docker SDK is not installed", context=what,
                    hint="pip install 'k8s-offline[build]' (source: docker needs it)") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker_errors.DockerException as e:
        raise Error(f"cannot reach the docker daemon: {e}", context=what,
                    hint="start docker or set DOCKER_HOST; or use source: registry for this image") from None
    try:
        image = client.images.get(ref)
        with open(dest, "wb") as f:
            f.writelines(image.save(named=True))
    except docker_errors.ImageNotFound:
        raise Error(f"image {ref} is not in the local docker daemon", context=what,
                    hint=f"docker pull or docker build {ref} first") from None
    except docker_errors.DockerException as e:
        raise Error(f"docker save {ref} failed: {e}", context=what) from None
    finally:
        client.close()


def _docker_export(image_ref: str, cache=None) -> Converted:
    with tempfile.TemporaryDirectory(prefix="bundler-docker-save-") as tmp:
        tar = Path(tmp) / "image.tar"
        _docker_save(image_ref, tar)
        return convert_docker_save(tar, image_ref, cache)


def _docker_resolve(image: Image) -> ImageArtifact:
    if len(image.platforms) != 1:
        raise Error(f"{image.ref}: a docker daemon export has one platform", context=f"resolving {image.ref}",
                    hint="list one platform for source: docker images")
    conv = _docker_export(image.ref)
    top = conv.blobs[0]
    return ImageArtifact(ref=image.ref, digest=conv.digest, media_type=top[2], size=top[1],
                         platforms=tuple(image.platforms), blobs=conv.blobs, source="docker")


def _docker_fetch(artifact: ImageArtifact, cache) -> dict:
    if all(cache.has(_hex(d), s) for d, s, _ in artifact.blobs):
        return {"downloaded_bytes": 0, "cache_hits": len(artifact.blobs)}
    conv = _docker_export(artifact.ref, cache)
    if conv.digest != artifact.digest:
        raise Error(f"the local image {artifact.ref} changed since it was locked",
                    context=f"exporting {artifact.ref} from the local docker daemon",
                    details=[f"locked: {artifact.digest}", f"now:    {conv.digest}"],
                    hint="re-run `bundler lock` if the new image is intended")
    return {"downloaded_bytes": sum(s for _, s, _ in conv.blobs), "cache_hits": 0}
