"""A registry v2 API client: basic and bearer-token auth, blobs (HEAD, mount, upload) and manifests."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union
from urllib.parse import urljoin, urlsplit

import requests

from contract import oci
from installer.errors import Error

MONOLITHIC_MAX = 32 * 1024 * 1024  # larger blobs go up in PATCH chunks (bounded request bodies)
CHUNK_SIZE = 32 * 1024 * 1024
TOKEN_MARGIN = 15.0  # seconds before expiry at which a cached token is fetched anew

STORAGE_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "file too large")


@dataclass(frozen=True)
class Challenge:
    """What `GET /v2/` asked for: scheme "none", "basic" or "bearer", with its parameters."""

    scheme: str
    params: Dict[str, str] = field(default_factory=dict)


def parse_challenge(header: Optional[str]) -> Challenge:
    """Parse a `Www-Authenticate` header such as `Bearer realm="...",service="..."`."""
    if not header:
        return Challenge("none")
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v1 if v1 else v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return Challenge(scheme.lower(), params)


def sha256_digest(data: bytes) -> str:
    """The `sha256:<hex>` digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FileSlice:
    """A read-only window [offset, offset+length) of a file that requests streams with a Content-Length."""

    def __init__(self, path: Union[str, Path], offset: int, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close(), which requests calls via _send
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


BodyFactory = Callable[[], object]


class RegistryClient:
    """One registry's v2 API over an injected requests Session; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        verify: Union[bool, str] = True,
        timeout: float = 60.0,
        monolithic_max: int = MONOLITHIC_MAX,
        chunk_size: int = CHUNK_SIZE,
        actions: str = "pull,push",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = urlsplit(self.base_url).netloc
        self.session = session
        self.username = username
        self.password = password
        self.verify = verify
        self.timeout = timeout
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self.actions = actions
        self._challenge: Optional[Challenge] = None
        self._tokens: Dict[Tuple[str, ...], Tuple[str, float]] = {}
        self._token_locks: Dict[Tuple[str, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._known: Dict[str, Set[str]] = {}  # blob digest -> repositories known to hold it

    @classmethod
    def for_registry(
        cls, registry: object, session: requests.Session, *, password: Optional[str] = None, **kwargs: object
    ) -> "RegistryClient":
        """A client for an inventory `Registry` (its password read from password_file unless given)."""
        scheme = "http" if registry.insecure else "https"
        if password is None and registry.password_file:
            password = read_password(registry.password_file)
        verify: Union[bool, str] = registry.ca_file or True
        return cls(
            f"{scheme}://{registry.hostname}:{registry.port}",
            session,
            username=registry.username,
            password=password,
            verify=verify,
            **kwargs,
        )

    # ---- auth -------------------------------------------------------------------------------------------

    def ping(self) -> Challenge:
        """GET /v2/: check that the registry answers and the credentials work; learn the auth scheme."""
        doing = f"connecting to the registry at {self.endpoint}"
        resp = self._send("GET", self._url("/v2/"), doing, headers={})
        if resp.status_code == 200:
            challenge = Challenge("none")
        elif resp.status_code == 401:
            challenge = parse_challenge(resp.headers.get("Www-Authenticate"))
            if challenge.scheme not in ("basic", "bearer"):
                raise Error(
                    f"the registry at {self.endpoint} asks for unsupported auth {challenge.scheme!r}",
                    context=doing,
                    hint="only Basic and Bearer (token) auth are supported",
                )
        else:
            raise self._failure(resp, doing, hint=f"is {self.base_url} a registry (v2 API)? check the port")
        with self._lock:
            self._challenge = challenge
        if challenge.scheme == "basic":
            resp = self._send("GET", self._url("/v2/"), doing, headers={"Authorization": self._basic()})
            if resp.status_code != 200:
                raise self._failure(resp, doing)
        elif challenge.scheme == "bearer":
            self._token(())  # a scope-less token proves the credentials, as `docker login` does
        return challenge

    def _basic(self) -> str:
        if self.username is None:
            raise Error(
                f"the registry at {self.endpoint} requires credentials",
                context="authenticating",
                hint="set registry.username and registry.password_file",
            )
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authorization(self, scopes: Tuple[str, ...]) -> Optional[str]:
        if self._challenge is None:
            self.ping()
        scheme = self._challenge.scheme
        if scheme == "basic":
            return self._basic()
        if scheme == "bearer":
            return "Bearer " + self._token(scopes)
        return None

    def _token(self, scopes: Tuple[str, ...]) -> str:
        """A bearer token for these scopes, cached until shortly before it expires."""
        key = tuple(sorted(scopes))
        with self._lock:
            key_lock = self._token_locks.setdefault(key, threading.Lock())
        with key_lock:  # one fetch per scope set at a time; other scopes fetch in parallel
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            token, ttl = self._fetch_token(key)
            with self._lock:
                self._tokens[key] = (token, time.monotonic() + max(ttl - TOKEN_MARGIN, 1.0))
            return token

    def _fetch_token(self, scopes: Tuple[str, ...]) -> Tuple[str, float]:
        """GET the token realm with the challenge's service and these scopes: (token, seconds valid)."""
        params = self._challenge.params
        realm = params.get("realm")
        if not realm:
            raise Error(
                f"the registry at {self.endpoint} sent a Bearer challenge without a realm",
                context="authenticating",
            )
        query: List[Tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.extend(("scope", s) for s in scopes)
        auth = (self.username, self.password or "") if self.username is not None else None
        doing = f"getting a token from {realm}"
        resp = self._send("GET", realm, doing, params=query, auth=auth, headers={})
        if resp.status_code in (401, 403):
            raise Error(
                f"the token service {realm} refused the credentials of user {self.username!r}",
                context=doing,
                hint="check registry.username and the password in "
                "registry.password_file (Harbor's admin password)",
            )
        if resp.status_code != 200:
            raise self._failure(resp, doing)
        try:
            data = resp.json()
            token = data.get("token") or data["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise Error(f"the token service {realm} answered without a token", context=doing) from None
        return token, float(data.get("expires_in") or 60)

    def _forget_token(self, scopes: Tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(tuple(sorted(scopes)), None)

    def scope(self, repo: str) -> str:
        """The token scope this client asks for on a repository."""
        return f"repository:{repo}:{self.actions}"

    # ---- requests -----------------------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def _send(
        self, method: str, url: str, doing: str, *, body: object = None, **kwargs: object
    ) -> requests.Response:
        """One HTTP request with transport failures turned into Errors for people."""
        try:
            return self.session.request(
                method,
                url,
                data=body,
                verify=self.verify,
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.SSLError as e:
            raise Error(
                f"the TLS certificate of {urlsplit(url).netloc} is not trusted",
                context=doing,
                hint=self._ca_hint(),
                details=[_short(e)],
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise Error(
                f"cannot reach the registry at {urlsplit(url).netloc}",
                context=doing,
                hint="check that the registry runs and that registry.hostname/port are right "
                "(a re-run resumes where this one stopped)",
                details=[_short(e)],
            ) from None
        finally:
            if hasattr(body, "close"):
                body.close()

    def _ca_hint(self) -> str:
        if isinstance(self.verify, str):
            return (
                f"the CA file {self.verify} did not sign the registry's certificate: set registry.ca_file "
                "to the CA certificate that did"
            )
        return (
            "set registry.ca_file to the CA certificate that signed the registry's certificate "
            "(or registry.insecure: true for a plain-HTTP registry)"
        )

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: Sequence[str],
        doing: str,
        ok: Iterable[int] = (200,),
        body: Optional[BodyFactory] = None,
        headers: Optional[Dict[str, str]] = None,
        params: Optional[object] = None,
    ) -> requests.Response:
        """An authenticated request; on 401 fetch a fresh token (with the scope asked for) and retry once."""
        url = self._url(path_or_url)
        scopes_t = tuple(scopes)
        ok = tuple(ok)
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            auth = self._authorization(scopes_t)
            if auth:
                hdrs["Authorization"] = auth
            resp = self._send(method, url, doing, body=body() if body else None, headers=hdrs, params=params)
            if resp.status_code == 401 and attempt == 1 and self._challenge.scheme == "bearer":
                self._forget_token(scopes_t)
                wanted = parse_challenge(resp.headers.get("Www-Authenticate")).params.get("scope")
                if wanted and wanted not in scopes_t:
                    scopes_t = scopes_t + (wanted,)
                continue
            if resp.status_code in ok:
                return resp
            raise self._failure(resp, doing, repo=_repo_of(url))
        raise AssertionError("unreachable")

    def _failure(
        self, resp: requests.Response, doing: str, *, repo: Optional[str] = None, hint: Optional[str] = None
    ) -> Error:
        """The Error for a registry answer we did not expect, with what the registry said."""
        return failure_from_response(
            resp.status_code,
            resp.text,
            self.endpoint,
            doing,
            repo=repo,
            username=self.username,
            scheme=(self._challenge or Challenge("none")).scheme,
            hint=hint,
        )

    # ---- blobs --------------------------------------------------------------------------------------------

    def note_blob(self, repo: str, digest: str) -> None:
        """Remember that a repository of this registry holds a blob (a source for later mounts)."""
        with self._lock:
            self._known.setdefault(digest, set()).add(repo)

    def repos_with(self, digest: str) -> List[str]:
        """Repositories known to hold a blob."""
        with self._lock:
            return sorted(self._known.get(digest, ()))

    def blob_size(self, repo: str, digest: str) -> Optional[int]:
        """HEAD a blob: its size when the repository has it, else None."""
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scopes=[self.scope(repo)],
            ok=(200, 404),
            doing=f"checking blob {digest[:19]} in {repo}",
        )
        if resp.status_code == 404:
            return None
        self.note_blob(repo, digest)
        return int(resp.headers.get("Content-Length", "-1"))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> Optional[str]:
        """Cross-repository mount: None when mounted, else the upload URL the registry opened instead."""
        resp = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            params={"mount": digest, "from": from_repo},
            scopes=[self.scope(repo), f"repository:{from_repo}:pull"],
            ok=(201, 202),
            doing=f"mounting blob {digest[:19]} from {from_repo} into {repo}",
        )
        if resp.status_code == 201:
            self.note_blob(repo, digest)
            return None
        return self._location(resp)

    def start_upload(self, repo: str) -> str:
        """POST an upload session; its URL."""
        resp = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            scopes=[self.scope(repo)],
            ok=(202,),
            doing=f"starting an upload to {repo}",
        )
        return self._location(resp)

    def _location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise Error(
                f"the registry at {self.endpoint} opened an upload without a Location",
                context="uploading a blob",
            )
        return self._url(loc)

    def upload_blob(
        self,
        repo: str,
        digest: str,
        path: Union[str, Path],
        size: int,
        *,
        location: Optional[str] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        """Stream a blob from a file: one PUT when small, else PATCH chunks with Content-Range then PUT."""
        scopes = [self.scope(repo)]
        doing = f"uploading blob {digest[:19]} ({size} bytes) to {repo}"
        url = location or self.start_upload(repo)
        octet = {"Content-Type": "application/octet-stream"}
        if size <= self.monolithic_max:
            self.request(
                "PUT",
                url,
                params={"digest": digest},
                scopes=scopes,
                ok=(201,),
                doing=doing,
                headers=octet,
                body=lambda: FileSlice(path, 0, size),
            )
        else:
            for start in range(0, size, self.chunk_size):
                length = min(self.chunk_size, size - start)
                hdrs = dict(octet, **{"Content-Range": f"{start}-{start + length - 1}"})
                resp = self.request(
                    "PATCH",
                    url,
                    scopes=scopes,
                    ok=(202,),
                    doing=doing,
                    headers=hdrs,
                    body=lambda s=start, n=length: FileSlice(path, s, n),
                )
                url = self._location(resp)
                if progress:
                    progress(length)
            self.request(
                "PUT",
                url,
                params={"digest": digest},
                scopes=scopes,
                ok=(201,),
                doing=doing,
                headers={"Content-Length": "0"},
            )
        self.note_blob(repo, digest)
        if progress and size <= self.monolithic_max:
            progress(size)

    # ---- manifests ----------------------------------------------------------------------------------------

    def manifest_digest(self, repo: str, reference: str) -> Optional[str]:
        """HEAD a manifest by tag or digest: the digest the registry serves, or None when absent."""
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[self.scope(repo)],
            ok=(200, 404),
            headers={"Accept": oci.ACCEPT},
            doing=f"checking manifest {repo}:{reference}",
        )
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT the exact manifest bytes under a tag or digest; the digest, checked against the bytes'."""
        expected = sha256_digest(data)
        doing = f"pushing manifest {repo}:{reference}"
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[self.scope(repo)],
            ok=(201, 200),
            headers={"Content-Type": media_type},
            body=lambda: data,
            doing=doing,
        )
        got = resp.headers.get("Docker-Content-Digest") or expected
        if got != expected:
            raise Error(
                f"the registry stored {repo}:{reference} as {got}, not {expected}",
                context=doing,
                hint="the registry rewrote the manifest; it must accept it byte for byte "
                f"(media type {media_type})",
            )
        return got

    def get_manifest(self, repo: str, reference: str) -> Tuple[bytes, str]:
        """GET a manifest: its bytes and media type."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[self.scope(repo)],
            headers={"Accept": oci.ACCEPT},
            doing=f"reading manifest {repo}:{reference}",
        )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return resp.content, media_type


def failure_from_response(
    status: int,
    body: str,
    endpoint: str,
    doing: str,
    *,
    repo: Optional[str] = None,
    username: Optional[str] = None,
    scheme: str = "none",
    hint: Optional[str] = None,
) -> Error:
    """Map a registry error answer (status + body) to an Error with a hint a person can act on."""
    codes, messages = _error_codes(body)
    text = body.lower()
    details = [f"HTTP {status}: " + ("; ".join(messages) if messages else _short(body) or "(empty body)")]
    project = repo.split("/")[0] if repo else None
    if status >= 500 and any(m in text for m in STORAGE_FULL_MARKERS):
        return Error(
            f"the registry at {endpoint} is out of storage space",
            context=doing,
            details=details,
            hint="free space in the registry's storage (Harbor: its data_dir, default /data) and "
            "re-run; blobs already pushed are kept",
        )
    if status == 401 and scheme == "basic":
        return Error(
            f"the registry at {endpoint} refused the credentials of user {username!r}",
            context=doing,
            details=details,
            hint="check registry.username and the password in registry.password_file",
        )
    if status in (401, 403) and (
        "insufficient_scope" in text or "DENIED" in codes or scheme == "bearer" or status == 403
    ):
        return Error(
            f"user {username!r} may not push to {repo or 'this repository'} on {endpoint}",
            context=doing,
            details=details,
            hint=f"the project {project!r} does not exist or the user is not allowed to push to it: "
            "check registry.project, or create the project (the installer does when allowed)",
        )
    if status == 404 and "BLOB_UPLOAD_UNKNOWN" in codes:
        return Error(
            f"the registry at {endpoint} lost an upload in progress",
            context=doing,
            details=details,
            hint="the registry was probably restarted; re-run to resume (finished blobs are kept)",
        )
    if status == 404 and "NAME_UNKNOWN" in codes:
        return Error(
            f"the repository {repo} does not exist on {endpoint}",
            context=doing,
            details=details,
            hint=f"check registry.project ({project!r})",
        )
    if status in (400, 415) and ("MANIFEST_INVALID" in codes or "UNSUPPORTED" in codes or status == 415):
        return Error(
            f"the registry at {endpoint} rejected a manifest",
            context=doing,
            details=details,
            hint="registries older than distribution 2.7 (Harbor 1.4 ships 2.6) reject OCI media "
            "types; bundle the images with Docker v2 schema 2 media types",
        )
    return Error(
        f"the registry at {endpoint} answered HTTP {status}",
        context=doing,
        details=details,
        hint=hint or ("the registry failed; see its log" if status >= 500 else None),
    )


def _error_codes(body: str) -> Tuple[List[str], List[str]]:
    """The `errors[].code` values and readable messages of a registry v2 error body."""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return [], []
    codes = [str(e.get("code", "")) for e in errors if isinstance(e, dict)]
    msgs = []
    for e in errors:
        if isinstance(e, dict):
            detail = e.get("detail")
            msg = f"{e.get('code')}: {e.get('message')}"
            msgs.append(f"{msg} ({_short(json.dumps(detail))})" if detail else msg)
    return codes, msgs


def _repo_of(url: str) -> Optional[str]:
    m = re.search(r"/v2/(.+?)/(?:blobs|manifests|tags)/", urlsplit(url).path)
    return m.group(1) if m else None


def _short(value: object, limit: int = 300) -> str:
    text = str(value).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def read_password(path: str) -> str:
    """The password stored in a file (first line, without its newline)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise Error(
            f"cannot read the registry password file {path}: {e.strerror}",
            hint="set registry.password_file to a readable file holding the password",
        ) from None
    return text.splitlines()[0] if text else ""
