"""Where an image is pulled from (the registry mirrors applied) and the contract registry client that pulls
it, with failures worded for the spec's mirror rules and credentials."""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from bundler.sources import credentials
from bundler.spec import Mirrors, RegistryMirror
from contract.errors import Error
from contract.reference import Reference
from contract.registry import RegistryClient
from contract.registry_transport import Explain

RETRIES = 4  # further attempts on resets, timeouts, 5xx and 429 (the contract client backs off)
TIMEOUT = (10, 60)


# ---------------------------------------------------------------- where to pull from


@dataclass(frozen=True)
class Endpoint:
    """The repository actually asked after mirrors: scheme://host/v2/<repository>/..."""

    upstream: str  # registry/repository as named in the spec (docker.io/coredns/coredns)
    host: str
    repository: str
    scheme: str
    rule: RegistryMirror | None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def describe(self) -> list[str]:
        """Error details: the registry asked and the mirror rule that chose it."""
        lines = [f"registry asked: {self.scheme}://{self.host} (repository {self.repository})"]
        if self.rule is None:
            lines.append("no mirror rule applied (pulled from the upstream registry itself)")
        else:
            lines.append(f"mirror rule: {self.rule.from_} -> {self.rule.to}" + (" (insecure)" if self.rule.insecure
                                                                                  else ""))
        return lines


def endpoint(ref: Reference, mirrors: Mirrors) -> Endpoint:
    """Apply the registry mirrors to a parsed reference."""
    target, rule = mirrors.registry_for(ref.name)
    host, _, repository = target.partition("/")
    if not repository:
        raise Error(f"mirror rule {rule.from_} -> {rule.to} leaves no repository for {ref}",
                    context="applying registry mirrors", hint="a mirror's `to` is host[:port][/path]")
    if host == "docker.io":  # Docker Hub's API lives on another name than its references
        host = "registry-1.docker.io"
    return Endpoint(ref.name, host, repository, "http" if rule is not None and rule.insecure else "https", rule)


# ---------------------------------------------------------------- registry v2 client


class PullExplain(Explain):
    """The contract client's failures worded for pulls: the mirror rule and where its password came from."""

    def __init__(self, client: "Registry") -> None:
        super().__init__(client.host)
        self.client = client

    def tls(self, exc: BaseException, url: str, doing: str) -> Error:
        return credentials.tls_error(exc, url, self.client.rule, doing)

    def unreachable(self, url: str, doing: str, last: str, attempts: int) -> Error:
        return Error(f"cannot reach {url}: gave up after {attempts} attempts (last: {last})", context=doing,
                     hint="the registry keeps failing: retry later or point a mirror (mirrors.registries) at a copy")

    def not_a_registry(self, resp, doing: str) -> Error:
        return Error(f"{self.client.base}/v2/ answers HTTP {resp.status_code}: not a registry v2 API",
                     context=doing, hint="check the registry mirror's host and port")

    def credentials_needed(self, doing: str) -> Error:
        return Error(f"{self.client.host} asks for a username and password", context=doing,
                     hint=credentials.refused_hint(self.client.rule))

    def unsupported(self, scheme: str, doing: str) -> Error:
        return Error(f"{self.client.host} asks for unsupported authentication {scheme!r}", context=doing)

    def no_realm(self, doing: str) -> Error:
        return self.unsupported("bearer", doing)

    def token_doing(self, realm: str, doing: str) -> str:
        return doing

    def token_refused(self, realm: str, status: int, username: str | None, doing: str) -> Error:
        return Error(f"the token service {realm} refused "
                     + (f"the credentials of {username}" if username else "an anonymous token")
                     + f" (HTTP {status})", context=doing, hint=credentials.refused_hint(self.client.rule))

    def token_failed(self, resp, realm: str, doing: str) -> Error:
        return self.no_token(realm, resp.status_code, doing)

    def no_token(self, realm: str, status: int, doing: str) -> Error:
        return Error(f"the token service {realm} answered HTTP {status} without a token", context=doing)


class Registry(RegistryClient):
    """One registry host to pull from: the contract client with retries on 5xx/resets, pull-only tokens (or
    basic auth) with the mirror rule's credentials, read when first needed."""

    def __init__(self, session, scheme: str, host: str, rule: RegistryMirror | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.scheme, self.host, self.rule = scheme, host, rule
        super().__init__(f"{scheme}://{host}", session, credentials=self._rule_credentials, verify=None,
                         timeout=TIMEOUT, retries=RETRIES, sleep=sleep, allow_redirects=True, check_login=False,
                         actions="pull")
        self.explain = PullExplain(self)

    @property
    def base(self) -> str:
        return self.base_url

    def _rule_credentials(self) -> tuple[str, str] | None:
        if self.rule is None or not self.rule.username:
            return None
        return self.rule.username, credentials.password(self.rule, self.host)


_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def client_for(ep: Endpoint, session) -> Registry:
    """One Registry per (session, host): tokens are reused across resolve and fetch."""
    with _clients_lock:
        try:
            per_session = _clients.setdefault(session, {})
        except TypeError:  # a session that cannot be weakly referenced: no reuse
            return Registry(session, ep.scheme, ep.host, ep.rule)
        key = (ep.scheme, ep.host, ep.rule)
        if key not in per_session:
            per_session[key] = Registry(session, ep.scheme, ep.host, ep.rule)
        return per_session[key]
