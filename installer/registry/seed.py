"""Seed the site registry from the bundle's OCI image layout: push only what is missing, then verify.

Naming rules (original reference -> repository in the site registry):
  last-component  k8s.gcr.io/pause-amd64:3.1      -> <project>/pause-amd64:3.1
                  docker.io/coredns/coredns:1.1.3 -> <project>/coredns:1.1.3   (what the seeds do)
  keep-path       k8s.gcr.io/pause-amd64:3.1      -> <project>/k8s.gcr.io/pause-amd64:3.1
                  coredns/coredns:1.1.3           -> <project>/docker.io/coredns/coredns:1.1.3
                  (registry host kept so two upstreams never collide; Docker Hub names normalized)
Two images landing on the same repository:tag with different digests are an error, never an overwrite.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

import requests

from contract import oci
from contract.errors import Error
from contract.oci import ORIGINAL_REF_ANNOTATIONS
from contract.reference import InvalidReference, Reference
from installer.registry.client import RegistryClient, sha256_digest

NAMINGS = ("last-component", "keep-path")

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (bytes done, bytes to do) over blobs pushed or mounted


def target_repository(ref: Reference, project: str, naming: str) -> str:
    """The repository an image gets in the site registry (see the module docstring)."""
    if naming == "last-component":
        return f"{project}/{ref.repository.split('/')[-1]}"
    if naming == "keep-path":
        return f"{project}/{ref.registry.replace(':', '-')}/{ref.repository}"
    raise Error(f"unknown image naming rule {naming!r}", hint=f"use one of: {', '.join(NAMINGS)}")


@dataclass
class Image:
    """One image of the layout and where it goes."""

    original_ref: str
    repo: str
    tag: Optional[str]
    digest: str
    media_type: str
    manifests: List[Tuple[str, str]]  # (digest, media type): an index's children first, the top last
    blobs: Dict[str, int]  # digest -> size, configs and layers of every platform

    @property
    def reference(self) -> str:
        """What the top manifest is pushed under: the tag, or the digest for digest-only references."""
        return self.tag or self.digest


class Layout:
    """An OCI image layout on disk (read-only): its images and blob files."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        index = self.root / oci.INDEX_FILE
        try:
            self.index = json.loads(index.read_text())
        except (OSError, ValueError) as e:
            raise Error(
                f"cannot read the image index {index}: {e}",
                context="reading the bundle's images",
                hint="unpack and verify the bundle again",
            ) from None

    def blob_path(self, digest: str) -> Path:
        """The file holding a blob."""
        algo, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algo / hexpart

    def read_manifest(self, digest: str) -> bytes:
        """A manifest's bytes, checked against its digest (they are small)."""
        try:
            data = self.blob_path(digest).read_bytes()
        except OSError:
            raise self._missing(digest) from None
        if sha256_digest(data) != digest:
            raise Error(
                f"manifest {digest} in {self.root} does not match its digest",
                context="reading the bundle's images",
                hint="unpack and verify the bundle again",
            )
        return data

    def _missing(self, digest: str) -> Error:
        return Error(
            f"blob {digest} is missing from the image layout {self.root}",
            context="reading the bundle's images",
            hint="unpack and verify the bundle again",
        )

    def images(self, project: str, naming: str) -> List[Image]:
        """Every image listed in index.json, with its manifests and blobs, targeted at project/naming."""
        result = []
        entries = self.index.get("manifests", [])
        true_digests = {e.get("digest") for e in entries if oci.compat_for(e) is None}
        for entry in entries:
            stands_for = oci.compat_for(entry)
            if stands_for is not None:  # skopeo 1.9's second entry of a Docker image: no image of its own
                if stands_for not in true_digests:
                    raise Error(
                        f"index.json entry {entry.get('digest')} stands for {stands_for}, which index.json "
                        "does not list",
                        context="reading the bundle's images",
                        hint="unpack and verify the bundle again; rebuild it if it persists",
                    )
                continue
            original = original_ref(entry)
            try:
                ref = Reference.parse(original)
            except InvalidReference as e:
                raise Error(
                    f"image {entry.get('digest')} in index.json: {e.message}",
                    context="reading the bundle's images",
                    hint="unpack and verify the bundle again; rebuild it if it persists",
                ) from None
            manifests: List[Tuple[str, str]] = []
            blobs: Dict[str, int] = {}
            self._walk(entry["digest"], oci.listed_media_type(entry), manifests, blobs)
            result.append(
                Image(
                    original,
                    target_repository(ref, project, naming),
                    ref.tag,
                    entry["digest"],
                    manifests[-1][1],
                    manifests,
                    blobs,
                )
            )
        _check_collisions(result)
        return result

    def _walk(
        self, digest: str, media_type: str, manifests: List[Tuple[str, str]], blobs: Dict[str, int]
    ) -> None:
        doc = json.loads(self.read_manifest(digest))
        media_type = doc.get("mediaType") or media_type  # the document's own type is authoritative
        if media_type not in oci.MANIFEST_TYPES:
            raise Error(
                f"manifest {digest} has the unsupported media type {media_type!r}",
                context="reading the bundle's images",
                hint=f"the layout must hold one of: {', '.join(oci.MANIFEST_TYPES)}",
            )
        if media_type in oci.INDEX_TYPES:
            for child in doc.get("manifests", []):
                self._walk(child["digest"], child.get("mediaType", ""), manifests, blobs)
        else:
            for desc in [doc["config"], *doc.get("layers", [])]:
                if desc.get("urls") and not self.blob_path(desc["digest"]).exists():
                    continue  # a foreign layer the registry never holds
                if not self.blob_path(desc["digest"]).is_file():
                    raise self._missing(desc["digest"])
                blobs[desc["digest"]] = int(desc["size"])
        if (digest, media_type) not in manifests:
            manifests.append((digest, media_type))


def original_ref(entry: dict) -> str:
    """The full original reference of an index.json entry."""
    ann = entry.get("annotations") or {}
    for key in ORIGINAL_REF_ANNOTATIONS:
        value = ann.get(key, "")
        if value and ("/" in value or ":" in value):
            return value
    raise Error(
        f"image {entry.get('digest')} in index.json has no full original reference",
        context="reading the bundle's images",
        hint=f"the bundle must annotate each image with one of {', '.join(ORIGINAL_REF_ANNOTATIONS)}",
    )


def _check_collisions(images: Sequence[Image]) -> None:
    seen: Dict[Tuple[str, str], Image] = {}
    for img in images:
        other = seen.setdefault((img.repo, img.reference), img)
        if other.digest != img.digest:
            raise Error(
                f"{other.original_ref} and {img.original_ref} would both become {img.repo}:{img.reference}",
                context="naming images for the site registry",
                hint="use the keep-path naming rule, which keeps each image's full path",
            )


@dataclass
class ImageReport:
    """What seeding did for one image."""

    original_ref: str
    seeded_ref: str
    digest: str
    status: str = "pushed"  # "pushed" or "present" (the tag already pointed at this digest)
    blobs_pushed: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_pushed: int = 0
    bytes_mounted: int = 0
    bytes_present: int = 0
    manifests_pushed: int = 0
    verified: bool = False


@dataclass
class SeedReport:
    """What seeding did for every image, with totals."""

    registry: str
    project: str
    images: List[ImageReport] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, name: str) -> int:
        """Sum of one ImageReport counter over all images."""
        return sum(getattr(i, name) for i in self.images)

    @property
    def bytes_pushed(self) -> int:
        return self.total("bytes_pushed")

    @property
    def pushed_anything(self) -> bool:
        return any(i.blobs_pushed or i.blobs_mounted or i.manifests_pushed for i in self.images)

    def as_dict(self) -> dict:
        counters = (
            "blobs_pushed",
            "blobs_mounted",
            "blobs_present",
            "bytes_pushed",
            "bytes_mounted",
            "bytes_present",
            "manifests_pushed",
        )
        return {
            "registry": self.registry,
            "project": self.project,
            "seconds": round(self.seconds, 3),
            "totals": dict(
                {c: self.total(c) for c in counters},
                images=len(self.images),
                images_present=sum(i.status == "present" for i in self.images),
            ),
            "images": [asdict(i) for i in self.images],
        }

    def summary(self) -> str:
        """One line for people."""
        n = len(self.images)
        present = sum(i.status == "present" for i in self.images)
        return (
            f"{n} images in {self.registry}/{self.project}: {n - present} pushed, {present} already present; "
            f"{self.total('blobs_pushed')} blobs pushed ({self.bytes_pushed} bytes), "
            f"{self.total('blobs_mounted')} mounted, {self.total('blobs_present')} present "
            f"in {self.seconds:.1f}s"
        )


def _parallel(jobs: int, fn: Callable[[T], object], items: Iterable[T]) -> List[object]:
    """Run fn over items on `jobs` threads; the first failure cancels what has not started and is raised."""
    items = list(items)
    if not items:
        return []
    stop = threading.Event()

    def guarded(item: T) -> object:
        if stop.is_set():
            return None
        return fn(item)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(guarded, it) for it in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            stop.set()
            for f in futures:
                f.cancel()
            raise failed[0].exception()
        return [f.result() for f in futures]


def _client_for(registry: object, session: Optional[requests.Session]) -> RegistryClient:
    if isinstance(registry, RegistryClient):
        return registry
    if isinstance(registry, str):
        return RegistryClient(registry, session or requests.Session())
    return RegistryClient.for_registry(registry, session or requests.Session())


def push_missing(
    layout_dir: Union[str, Path],
    registry: object,
    project: str,
    session: Optional[requests.Session] = None,
    jobs: int = 4,
    naming: str = "last-component",
    progress: Optional[Progress] = None,
) -> SeedReport:
    """Push every image of the layout to <registry>/<project>, only what is missing, then verify digests.

    `registry` is a RegistryClient (used as is), an inventory Registry, or a base URL (then `session`
    carries the requests). Blobs go first (HEAD, else cross-repository mount, else upload), in parallel;
    an index's children before the index; finally every pushed manifest is read back and its digest checked.
    """
    started = time.monotonic()
    client = _client_for(registry, session)
    layout = Layout(layout_dir)
    images = layout.images(project, naming)
    report = SeedReport(client.endpoint, project)
    reports = {
        id(img): ImageReport(img.original_ref, f"{client.endpoint}/{_repo_ref(img)}", img.digest)
        for img in images
    }
    client.ping()

    # 1. A tag already at the bundle's digest means the whole image is there: the registry accepts a
    #    manifest only once every blob (and child manifest) it names exists.
    def check_tag(img: Image) -> None:
        if client.manifest_digest(img.repo, img.reference) == img.digest:
            rep = reports[id(img)]
            rep.status = "present"
            for digest in img.blobs:
                client.note_blob(img.repo, digest)

    _parallel(jobs * 2, check_tag, images)
    todo = [img for img in images if reports[id(img)].status != "present"]
    todo_ids = {id(img) for img in todo}

    # 2. Which (repository, blob) pairs are already there.
    pairs = sorted({(img.repo, d) for img in todo for d in img.blobs})
    present = {
        p
        for p, size in zip(pairs, _parallel(jobs * 2, lambda p: client.blob_size(*p), pairs))
        if size is not None
    }
    missing: Dict[str, List[str]] = {}
    sizes = {d: s for img in todo for d, s in img.blobs.items()}
    for repo, digest in pairs:
        if (repo, digest) not in present:
            missing.setdefault(digest, []).append(repo)

    # 3. Each missing blob once: upload it to its first repository, mount it into the others.
    outcome: Dict[Tuple[str, str], str] = {}
    total = sum(sizes[d] * len(repos) for d, repos in missing.items())
    done = [0]
    lock = threading.Lock()

    def advance(n: int) -> None:
        if progress:
            with lock:
                done[0] += n
                progress(done[0], total)

    def push_blob(digest: str) -> None:
        path, size = layout.blob_path(digest), sizes[digest]
        for repo in missing[digest]:
            sources = [r for r in client.repos_with(digest) if r != repo]
            location = client.mount_blob(repo, digest, sources[0]) if sources else None
            if sources and location is None:
                outcome[(repo, digest)] = "mounted"
                advance(size)
                continue
            client.upload_blob(repo, digest, path, size, location=location, progress=advance)
            outcome[(repo, digest)] = "pushed"

    _parallel(jobs, push_blob, sorted(missing, key=lambda d: -sizes[d]))

    # 4. Manifests last, children before their index, then read back and compare digests.
    def push_manifests(img: Image) -> None:
        for digest, media_type in img.manifests[:-1]:
            if client.manifest_digest(img.repo, digest) != digest:
                client.put_manifest(img.repo, digest, layout.read_manifest(digest), media_type)
                reports[id(img)].manifests_pushed += 1
        client.put_manifest(img.repo, img.reference, layout.read_manifest(img.digest), img.media_type)
        reports[id(img)].manifests_pushed += 1

    _parallel(jobs, push_manifests, todo)

    def verify(img: Image) -> None:
        checks = [(img.reference, img.digest)]
        if id(img) in todo_ids:  # children of an index just pushed; a present index implies them
            checks += [(d, d) for d, _ in img.manifests[:-1]]
        for ref, digest in checks:
            data, _ = client.get_manifest(img.repo, ref)
            if sha256_digest(data) != digest:
                raise Error(
                    f"{img.repo}:{ref} in the registry has digest {sha256_digest(data)}, "
                    f"the bundle's is {digest}",
                    context="verifying seeded images",
                    hint="something else pushed to this tag; re-run to push the bundle's image",
                )
        reports[id(img)].verified = True

    _parallel(jobs * 2, verify, images)

    claimed = set()
    for img in images:
        rep = reports[id(img)]
        for digest, size in img.blobs.items():
            how = outcome.get((img.repo, digest), "present")
            if (img.repo, digest) in claimed:
                how = "present"
            claimed.add((img.repo, digest))
            setattr(rep, f"blobs_{how}", getattr(rep, f"blobs_{how}") + 1)
            setattr(rep, f"bytes_{how}", getattr(rep, f"bytes_{how}") + size)
        report.images.append(rep)
    report.seconds = time.monotonic() - started
    return report


def _repo_ref(img: Image) -> str:
    return f"{img.repo}:{img.tag}" if img.tag else f"{img.repo}@{img.digest}"


def seeded_refs(
    layout_dir: Union[str, Path], registry_endpoint: str, project: str, naming: str = "last-component"
) -> Dict[str, str]:
    """{original reference: reference in the site registry} for every image of the layout."""
    return {
        img.original_ref: f"{registry_endpoint}/{_repo_ref(img)}"
        for img in Layout(layout_dir).images(project, naming)
    }
