"""ONE registry v2 client for both programs: pull (manifests by tag or digest, blobs verified while streaming)
and push (blob HEAD, cross-repository mount, monolithic or chunked upload, manifest PUT), over the shared
transport (contract/registry_transport.py: retries, challenge, basic auth, bearer tokens, RegistryError)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Set, Tuple, Union

import requests

from contract import oci
from contract.errors import DigestMismatch
from contract.registry_transport import (
    TRANSIENT,
    Challenge,
    Explain,
    RegistryError,
    Transport,
    UnexpectedStatus,
    parse_challenge,
    repo_of,
    sha256_digest,
    short,
)

__all__ = ["Challenge", "Explain", "FileSlice", "RegistryClient", "RegistryError", "UnexpectedStatus",
           "parse_challenge", "repo_of", "sha256_digest", "short"]

MONOLITHIC_MAX = 32 * 1024 * 1024  # larger blobs go up in PATCH chunks (bounded request bodies)
CHUNK_SIZE = 32 * 1024 * 1024
MANIFEST_LIMIT = 4 << 20  # a manifest larger than this is refused unread
READ_CHUNK = 1 << 20


class FileSlice:
    """A read-only window [offset, offset+length) of a file that requests streams with a Content-Length."""

    def __init__(self, path: Union[str, Path], offset: int, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close(), which the transport calls
        self._f.seek(offset)
        self._left = length
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()


class RegistryClient(Transport):
    """A registry's v2 API: what the bundler pulls and the installer pushes (see Transport for the options)."""

    def __init__(self, base_url: str, session: requests.Session, *, monolithic_max: int = MONOLITHIC_MAX,
                 chunk_size: int = CHUNK_SIZE, **kwargs: object) -> None:
        super().__init__(base_url, session, **kwargs)
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self._known: Dict[str, Set[str]] = {}  # blob digest -> repositories known to hold it

    # ---- pull ---------------------------------------------------------------------------------------------

    def pull_manifest(self, repo: str, reference: str, doing: str, limit: int = MANIFEST_LIMIT,
                      name: Optional[str] = None) -> Tuple[bytes, str, Optional[str]]:
        """GET a manifest by tag or digest (any type of oci.ACCEPT): (bytes, Content-Type, the digest the
        registry announces). UnexpectedStatus when not 200; a RegistryError when larger than limit. name: the
        image's name in messages (default: repo)."""
        url = f"/v2/{repo}/manifests/{reference}"
        resp = self.request("GET", url, scopes=[self.scope(repo)], doing=doing, ok=None,
                            headers={"Accept": oci.ACCEPT}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise UnexpectedStatus(f"HTTP {resp.status_code} for the manifest of {name or repo}:{reference}",
                                       status=resp.status_code, operation=doing, url=self._url(url),
                                       context=doing)
            body = resp.raw.read(limit + 1, decode_content=True)
        if len(body) > limit:
            raise RegistryError(f"the manifest of {name or repo}:{reference} is larger than {limit} bytes", context=doing,
                                status=200, operation=doing, url=self._url(url))
        return body, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest")

    def pull_blob(self, repo: str, digest: str, size: int, writer: Callable[[], ContextManager],
                  doing: str, update: Callable[[int], None] = lambda n: None, manifest: bool = False,
                  name: str = "", details: Sequence[str] = ()) -> int:
        """Stream a blob (or a manifest, by digest) into `writer()` (a context manager with write(), which
        discards what it got when the block raises), verifying size and sha256; retried when the body breaks
        off. UnexpectedStatus when not 200, DigestMismatch when the bytes are not the digest's. name (" of x:1")
        and details go into the errors."""
        kind = "manifests" if manifest else "blobs"
        headers = {"Accept": oci.ACCEPT} if manifest else {}
        path = f"/v2/{repo}/{kind}/{digest}"
        for attempt in range(self.retries + 1):
            resp = self.request("GET", path, scopes=[self.scope(repo)], doing=doing, ok=None, headers=headers,
                                stream=True)
            with resp:
                if resp.status_code != 200:
                    raise UnexpectedStatus(f"HTTP {resp.status_code} for {kind[:-1]} {digest}{name}",
                                           status=resp.status_code, operation=doing, url=self._url(path),
                                           context=doing, details=details)
                try:
                    with writer() as w:
                        got, h = 0, hashlib.sha256()
                        for chunk in resp.raw.stream(READ_CHUNK, decode_content=False):
                            w.write(chunk)
                            h.update(chunk)
                            got += len(chunk)
                            update(len(chunk))
                            if got > size:  # stop early: it cannot match any more
                                break
                        _verify(digest, size, "sha256:" + h.hexdigest(), got)
                    return got
                except TRANSIENT as e:
                    if attempt == self.retries:
                        raise RegistryError(f"copying {digest}{name} kept breaking off: {e}", context=doing,
                                            details=details, operation=doing, url=self._url(path)) from None
                    self.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    # ---- push: blobs --------------------------------------------------------------------------------------

    def note_blob(self, repo: str, digest: str) -> None:
        """Remember that a repository of this registry holds a blob (a source for later mounts)."""
        with self._lock:
            self._known.setdefault(digest, set()).add(repo)

    def repos_with(self, digest: str) -> List[str]:
        """Repositories known to hold a blob."""
        with self._lock:
            return sorted(self._known.get(digest, ()))

    def blob_size(self, repo: str, digest: str) -> Optional[int]:
        """HEAD a blob: its size when the repository has it, else None. A 500 for one blob is the registry
        failing to read what it stored for it (docker-registry killed while writing the blob's link file
        answers so until the blob is uploaded again): not there, so it is uploaded."""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=[self.scope(repo)], ok=(200, 404, 500),
                            doing=f"checking blob {digest[:19]} in {repo}")
        if resp.status_code in (404, 500):
            return None
        self.note_blob(repo, digest)
        return int(resp.headers.get("Content-Length", "-1"))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> Optional[str]:
        """Cross-repository mount: None when mounted, else the upload URL the registry opened instead."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": from_repo},
                            scopes=[self.scope(repo), f"repository:{from_repo}:pull"], ok=(201, 202),
                            doing=f"mounting blob {digest[:19]} from {from_repo} into {repo}")
        if resp.status_code == 201:
            self.note_blob(repo, digest)
            return None
        return self._location(resp)

    def start_upload(self, repo: str) -> str:
        """POST an upload session; its URL."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=[self.scope(repo)], ok=(202,),
                            doing=f"starting an upload to {repo}")
        return self._location(resp)

    def _location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"the registry at {self.endpoint} opened an upload without a Location",
                                context="uploading a blob", status=resp.status_code, operation="uploading a blob")
        return self._url(loc)

    def upload_blob(self, repo: str, digest: str, path: Union[str, Path], size: int, *,
                    location: Optional[str] = None, progress: Optional[Callable[[int], None]] = None) -> None:
        """Stream a blob from a file: one PUT when small, else PATCH chunks with Content-Range then PUT."""
        scopes = [self.scope(repo)]
        doing = f"uploading blob {digest[:19]} ({size} bytes) to {repo}"
        url = location or self.start_upload(repo)
        octet = {"Content-Type": "application/octet-stream"}
        if size <= self.monolithic_max:
            self.request("PUT", url, params={"digest": digest}, scopes=scopes, ok=(201,), doing=doing,
                         headers=octet, body=lambda: FileSlice(path, 0, size))
        else:
            for start in range(0, size, self.chunk_size):
                length = min(self.chunk_size, size - start)
                hdrs = dict(octet, **{"Content-Range": f"{start}-{start + length - 1}"})
                resp = self.request("PATCH", url, scopes=scopes, ok=(202,), doing=doing, headers=hdrs,
                                    body=lambda s=start, n=length: FileSlice(path, s, n))
                url = self._location(resp)
                if progress:
                    progress(length)
            self.request("PUT", url, params={"digest": digest}, scopes=scopes, ok=(201,), doing=doing,
                         headers={"Content-Length": "0"})
        self.note_blob(repo, digest)
        if progress and size <= self.monolithic_max:
            progress(size)

    # ---- push: manifests ----------------------------------------------------------------------------------

    def manifest_digest(self, repo: str, reference: str) -> Optional[str]:
        """HEAD a manifest by tag or digest: the digest the registry serves, or None when absent."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scopes=[self.scope(repo)],
                            ok=(200, 404), headers={"Accept": oci.ACCEPT},
                            doing=f"checking manifest {repo}:{reference}")
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT the exact manifest bytes under a tag or digest; the digest, checked against the bytes'."""
        expected = sha256_digest(data)
        doing = f"pushing manifest {repo}:{reference}"
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scopes=[self.scope(repo)], ok=(201, 200),
                            headers={"Content-Type": media_type}, body=lambda: data, doing=doing)
        got = resp.headers.get("Docker-Content-Digest") or expected
        if got != expected:
            raise RegistryError(f"the registry stored {repo}:{reference} as {got}, not {expected}", context=doing,
                                hint="the registry rewrote the manifest; it must accept it byte for byte "
                                f"(media type {media_type})", status=resp.status_code, operation=doing)
        return got

    def get_manifest(self, repo: str, reference: str) -> Tuple[bytes, str]:
        """GET a manifest: its bytes and media type."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scopes=[self.scope(repo)],
                            headers={"Accept": oci.ACCEPT}, doing=f"reading manifest {repo}:{reference}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return resp.content, media_type


def _verify(digest: str, size: int, actual: str, got: int) -> None:
    """Raise DigestMismatch unless what was read has the size and digest asked for."""
    if got != size:
        raise DigestMismatch(f"{digest}: size mismatch: expected {size} bytes, got {got}",
                             details=[f"expected sha256: {digest}", f"actual sha256: {actual}"])
    if actual != digest:
        raise DigestMismatch(f"{digest}: sha256 mismatch", details=[f"expected: {digest}", f"actual:   {actual}"])
