"""The registry v2 transport both programs share: requests with retries, the auth challenge, basic auth and
bearer tokens (cached per scope set until shortly before they expire), and a structured error.

What a failure is called differs between the two programs (the bundler names mirror rules, the installer
names inventory keys): each passes an `Explain` whose methods word the Error; the code paths are these.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from contract.errors import Error

TOKEN_MARGIN = 15.0  # seconds before expiry at which a cached token is fetched anew
TOKEN_DEFAULT_TTL = 60.0  # what the token spec says to assume when expires_in is absent
# what a flaky network looks like: worth another attempt (raw streams raise urllib3's own errors)
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)

Credentials = Callable[[], Optional[Tuple[str, str]]]  # read when needed: (username, password) or None


def sha256_digest(data: bytes) -> str:
    """The `sha256:<hex>` digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryError(Error):
    """A registry request that failed: the HTTP status (None when there was no answer), operation and URL."""

    def __init__(self, message: str, *, status: Optional[int] = None, operation: Optional[str] = None,
                 url: Optional[str] = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        self.operation = operation
        self.url = url

    @classmethod
    def of(cls, err: Error, *, status: Optional[int] = None, operation: Optional[str] = None,
           url: Optional[str] = None) -> "RegistryError":
        """err as a RegistryError (itself when it is one), with the attributes it does not have yet."""
        if not isinstance(err, RegistryError):
            err = cls(err.message, context=err.context, hint=err.hint, details=err.details, exit_code=err.exit_code)
        err.status = err.status if err.status is not None else status
        err.operation = err.operation or operation or err.context
        err.url = err.url or url
        return err


class UnexpectedStatus(RegistryError):
    """The registry answered a request with a status the operation does not accept (status is always set).
    Failures of the ping and the token service are plain RegistryErrors: a caller that words a status of its
    own request (404: image not found) never rewords them."""


@dataclass(frozen=True)
class Challenge:
    """What the registry asked for: scheme "none", "basic" or "bearer", with its parameters."""

    scheme: str
    params: Dict[str, str] = field(default_factory=dict)


def parse_challenge(header: Optional[str]) -> Challenge:
    """Parse a `Www-Authenticate` header such as `Bearer realm="...",service="..."`."""
    if not header:
        return Challenge("none")
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v1 if v1 else v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return Challenge(scheme.lower(), params)


def short(value: object, limit: int = 300) -> str:
    """A value's text, cut to `limit` characters."""
    text = str(value).strip()
    return text if len(text) <= limit else text[:limit] + "..."


class Explain:
    """How the transport's failures are worded for people; each program subclasses it with its own hints."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def tls(self, exc: BaseException, url: str, doing: str) -> Error:
        return Error(f"the TLS certificate of {urlsplit(url).netloc} is not trusted", context=doing,
                     details=[short(exc)])

    def unreachable(self, url: str, doing: str, last: str, attempts: int) -> Error:
        tail = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        return Error(f"cannot reach the registry at {urlsplit(url).netloc}{tail}", context=doing, details=[last])

    def failed(self, url: str, doing: str, exc: BaseException) -> Error:
        return Error(f"cannot reach {url}: {exc}", context=doing)

    def not_a_registry(self, resp: requests.Response, doing: str) -> Error:
        return Error(f"{resp.url or self.endpoint} answers HTTP {resp.status_code}: not a registry v2 API",
                     context=doing)

    def credentials_needed(self, doing: str) -> Error:
        return Error(f"the registry at {self.endpoint} requires credentials", context=doing)

    def unsupported(self, scheme: str, doing: str) -> Error:
        return Error(f"the registry at {self.endpoint} asks for unsupported auth {scheme!r}", context=doing,
                     hint="only Basic and Bearer (token) auth are supported")

    def no_realm(self, doing: str) -> Error:
        return Error(f"the registry at {self.endpoint} sent a Bearer challenge without a realm", context=doing)

    def token_doing(self, realm: str, doing: str) -> str:
        """The context of the token request itself."""
        return f"getting a token from {realm}"

    def token_refused(self, realm: str, status: int, username: Optional[str], doing: str) -> Error:
        return Error(f"the token service {realm} refused the credentials of user {username!r}", context=doing)

    def token_failed(self, resp: requests.Response, realm: str, doing: str) -> Error:
        return self.failure(resp, doing)

    def no_token(self, realm: str, status: int, doing: str) -> Error:
        return Error(f"the token service {realm} answered without a token", context=doing)

    def failure(self, resp: requests.Response, doing: str, repo: Optional[str] = None,
                hint: Optional[str] = None) -> Error:
        """An answer the operation did not expect."""
        return Error(f"the registry at {self.endpoint} answered HTTP {resp.status_code}", context=doing,
                     details=[f"HTTP {resp.status_code}: {short(resp.text) or '(empty body)'}"], hint=hint)


BodyFactory = Callable[[], object]


class Transport:
    """One registry's v2 API over an injected requests Session; safe to share between threads.

    retries: further attempts on connection errors, timeouts, 5xx and 429 (0: one attempt, the answer goes to
    the caller). check_login: ping proves the credentials (as `docker login` does) and wants /v2/ to answer
    200 or 401; without it ping only learns the challenge and accepts a 404 (mirrors that do not serve /v2/).
    """

    def __init__(self, base_url: str, session: requests.Session, *, username: Optional[str] = None,
                 password: Optional[str] = None, credentials: Optional[Credentials] = None,
                 verify: Union[bool, str, None] = True, timeout: Union[float, Tuple[float, float]] = 60.0,
                 retries: int = 0, sleep: Callable[[float], None] = time.sleep, allow_redirects: bool = False,
                 check_login: bool = True, actions: str = "pull,push", explain: Optional[Explain] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = urlsplit(self.base_url).netloc
        self.session = session
        self.username = username
        self.password = password
        self._credentials = credentials
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep
        self.allow_redirects = allow_redirects
        self.check_login = check_login
        self.actions = actions
        self.explain = explain or Explain(self.endpoint)
        self._challenge: Optional[Challenge] = None
        self._tokens: Dict[Tuple[str, ...], Tuple[str, float]] = {}
        self._token_locks: Dict[Tuple[str, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._ping_lock = threading.Lock()

    # ---- sending ------------------------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    @staticmethod
    def delay(attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1 = the first retry)."""
        return min(8.0, 0.5 * 2 ** (attempt - 1))

    def send(self, method: str, url: str, doing: str, *, body: Optional[BodyFactory] = None,
             **kwargs: object) -> requests.Response:
        """One HTTP request, retried on transient failures; failures without an answer become RegistryErrors.
        With retries, an answer that stays 5xx/429 is a RegistryError too; without, it goes to the caller."""
        attempts = self.retries + 1
        extra: Dict[str, object] = {"timeout": self.timeout, "allow_redirects": self.allow_redirects}
        if self.verify is not None:
            extra["verify"] = self.verify
        last = ""
        for attempt in range(attempts):
            if attempt:
                self.sleep(self.delay(attempt))
            data = body() if body else None
            try:
                resp = self.session.request(method, url, data=data, **extra, **kwargs)
            except requests.exceptions.SSLError as e:  # a TLS problem is not a flaky network: no retries
                raise RegistryError.of(self.explain.tls(e, url, doing), operation=doing, url=url) from None
            except TRANSIENT as e:
                last = str(e) or type(e).__name__
                continue
            except requests.RequestException as e:
                raise RegistryError.of(self.explain.failed(url, doing, e), operation=doing, url=url) from None
            finally:
                if hasattr(data, "close"):
                    data.close()
            if (resp.status_code >= 500 or resp.status_code == 429) and attempts > 1:
                last = f"HTTP {resp.status_code}"
                resp.close()
                continue
            return resp
        raise RegistryError.of(self.explain.unreachable(url, doing, last, attempts), operation=doing, url=url)

    # ---- auth ---------------------------------------------------------------------------------------------

    def credentials(self) -> Optional[Tuple[str, str]]:
        """(username, password) to send, or None."""
        if self._credentials is not None:
            return self._credentials()
        return (self.username, self.password or "") if self.username is not None else None

    def ping(self, doing: Optional[str] = None) -> Challenge:
        """GET /v2/: check that the registry answers; learn the auth scheme (and, with check_login, prove the
        credentials)."""
        doing = doing or f"connecting to the registry at {self.endpoint}"
        url = self._url("/v2/")
        resp = self.send("GET", url, doing, headers={})
        resp.close()
        if resp.status_code == 401:
            challenge = parse_challenge(resp.headers.get("Www-Authenticate"))
            if self.check_login and challenge.scheme not in ("basic", "bearer"):
                raise RegistryError.of(self.explain.unsupported(challenge.scheme, doing), status=401,
                                       operation=doing, url=url)
        elif resp.status_code == 200 or (resp.status_code == 404 and not self.check_login):
            challenge = Challenge("none")
        elif self.check_login:
            raise RegistryError.of(self.explain.failure(resp, doing, hint=f"is {self.base_url} a registry "
                                                           "(v2 API)? check the port"),
                                      status=resp.status_code, operation=doing, url=url)
        else:
            raise RegistryError.of(self.explain.not_a_registry(resp, doing), status=resp.status_code,
                                      operation=doing, url=url)
        with self._lock:
            self._challenge = challenge
        if self.check_login and challenge.scheme == "basic":
            resp = self.send("GET", url, doing, headers={"Authorization": self._basic(doing)})
            resp.close()
            if resp.status_code != 200:
                raise RegistryError.of(self.explain.failure(resp, doing), status=resp.status_code,
                                          operation=doing, url=url)
        elif self.check_login and challenge.scheme == "bearer":
            self._token((), doing)  # a scope-less token proves the credentials
        return challenge

    def _ensure_pinged(self, doing: str) -> None:
        with self._ping_lock:
            if self._challenge is None:
                self.ping(None if self.check_login else doing)

    def _basic(self, doing: str) -> str:
        creds = self.credentials()
        if creds is None:
            raise RegistryError.of(self.explain.credentials_needed(doing), status=401, operation=doing)
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()

    def authorization(self, scopes: Tuple[str, ...], doing: str) -> Optional[str]:
        """The Authorization header for a request needing these scopes (None when the registry wants none)."""
        self._ensure_pinged(doing)
        scheme = self._challenge.scheme
        if scheme == "none":
            return None
        if scheme == "basic":
            return self._basic(doing)
        if scheme == "bearer":
            return "Bearer " + self._token(scopes, doing)
        raise RegistryError.of(self.explain.unsupported(scheme, doing), status=401, operation=doing)

    def _token(self, scopes: Tuple[str, ...], doing: str) -> str:
        """A bearer token for these scopes, cached until shortly before it expires."""
        key = tuple(sorted(scopes))
        with self._lock:
            key_lock = self._token_locks.setdefault(key, threading.Lock())
        with key_lock:  # one fetch per scope set at a time; other scopes fetch in parallel
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            token, ttl = self._fetch_token(key, doing)
            with self._lock:
                self._tokens[key] = (token, time.monotonic() + max(ttl - TOKEN_MARGIN, 1.0))
            return token

    def _fetch_token(self, scopes: Tuple[str, ...], doing: str) -> Tuple[str, float]:
        """GET the token realm with the challenge's service and these scopes: (token, seconds valid)."""
        params = self._challenge.params
        realm = params.get("realm")
        if not realm:
            raise RegistryError.of(self.explain.no_realm(doing), operation=doing)
        query: List[Tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.extend(("scope", s) for s in scopes)
        creds = self.credentials()
        token_doing = self.explain.token_doing(realm, doing)
        resp = self.send("GET", realm, token_doing, params=query, auth=creds, headers={})
        if resp.status_code in (401, 403):
            raise RegistryError.of(self.explain.token_refused(realm, resp.status_code,
                                                                 creds[0] if creds else None, token_doing),
                                      status=resp.status_code, operation=token_doing, url=realm)
        if resp.status_code != 200:
            raise RegistryError.of(self.explain.token_failed(resp, realm, token_doing),
                                      status=resp.status_code, operation=token_doing, url=realm)
        try:
            data = resp.json()
            token = data.get("token") or data["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise RegistryError.of(self.explain.no_token(realm, resp.status_code, token_doing),
                                   status=resp.status_code, operation=token_doing, url=realm) from None
        return token, float(data.get("expires_in") or TOKEN_DEFAULT_TTL)

    def _forget_token(self, scopes: Tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(tuple(sorted(scopes)), None)

    def scope(self, repo: str) -> str:
        """The token scope this client asks for on a repository."""
        return f"repository:{repo}:{self.actions}"

    # ---- authenticated requests ---------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, *, scopes: Sequence[str], doing: str,
                ok: Optional[Sequence[int]] = (200,), body: Optional[BodyFactory] = None,
                headers: Optional[Dict[str, str]] = None, params: Optional[object] = None,
                stream: bool = False) -> requests.Response:
        """An authenticated request; on 401 learn the challenge or fetch a fresh token (with the scope the
        registry names) and retry once. ok=None returns any answer to the caller."""
        url = self._url(path_or_url)
        scopes_t = tuple(scopes)
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            auth = self.authorization(scopes_t, doing)
            if auth:
                hdrs["Authorization"] = auth
            resp = self.send(method, url, doing, body=body, headers=hdrs, params=params, stream=stream)
            if resp.status_code == 401 and attempt == 1:
                asked = parse_challenge(resp.headers.get("Www-Authenticate"))
                if self._challenge.scheme == "none" and asked.scheme != "none":  # challenged only here
                    with self._lock:
                        self._challenge = asked
                    resp.close()
                    continue
                if self._challenge.scheme == "bearer":  # an expired token, or one without the scope needed
                    self._forget_token(scopes_t)
                    wanted = asked.params.get("scope")
                    if wanted and wanted not in scopes_t:
                        scopes_t = scopes_t + (wanted,)
                    resp.close()
                    continue
            if ok is None or resp.status_code in ok:
                return resp
            raise UnexpectedStatus.of(self.explain.failure(resp, doing, repo=repo_of(url)),
                                      status=resp.status_code, operation=doing, url=url)
        raise AssertionError("unreachable")


def repo_of(url: str) -> Optional[str]:
    """The repository a /v2/<repository>/{blobs,manifests,tags}/ URL names."""
    m = re.search(r"/v2/(.+?)/(?:blobs|manifests|tags)/", urlsplit(url).path)
    return m.group(1) if m else None
