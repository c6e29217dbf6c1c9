"""The installer's registry client: contract.registry's one client, worded for the inventory (registry.*
keys, Harbor's hints), built from an inventory `Registry`; and what a registry's error answers mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests

from contract import registry as contract_registry
from contract.errors import Error
from contract.registry import (  # noqa: F401 - the names the installer's modules and tests use
    FileSlice,
    RegistryError,
    parse_challenge,
    sha256_digest,
)
from contract.registry_transport import Challenge, Explain
from contract.registry_transport import short as _short

STORAGE_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "file too large")


class InstallerExplain(Explain):
    """Failures worded with the inventory keys to check."""

    def __init__(self, client: "RegistryClient") -> None:
        super().__init__(client.endpoint)
        self.client = client

    def tls(self, exc: BaseException, url: str, doing: str) -> Error:
        return Error(f"the TLS certificate of {urlsplit(url).netloc} is not trusted", context=doing,
                     hint=self._ca_hint(), details=[_short(exc)])

    def _ca_hint(self) -> str:
        verify = self.client.verify
        if isinstance(verify, str):
            return (f"the CA file {verify} did not sign the registry's certificate: set registry.ca_file "
                    "to the CA certificate that did")
        return ("set registry.ca_file to the CA certificate that signed the registry's certificate "
                "(or registry.insecure: true for a plain-HTTP registry)")

    def unreachable(self, url: str, doing: str, last: str, attempts: int) -> Error:
        return Error(f"cannot reach the registry at {urlsplit(url).netloc}", context=doing,
                     hint="check that the registry runs and that registry.hostname/port are right "
                     "(a re-run resumes where this one stopped)", details=[_short(last)])

    def credentials_needed(self, doing: str) -> Error:
        return Error(f"the registry at {self.endpoint} requires credentials", context="authenticating",
                     hint="set registry.username and registry.password_file")

    def no_realm(self, doing: str) -> Error:
        return Error(f"the registry at {self.endpoint} sent a Bearer challenge without a realm",
                     context="authenticating")

    def token_refused(self, realm: str, status: int, username: Optional[str], doing: str) -> Error:
        return Error(f"the token service {realm} refused the credentials of user {self.client.username!r}",
                     context=doing, hint="check registry.username and the password in "
                     "registry.password_file (Harbor's admin password)")

    def failure(self, resp: requests.Response, doing: str, repo: Optional[str] = None,
                hint: Optional[str] = None) -> Error:
        return failure_from_response(resp.status_code, resp.text, self.endpoint, doing, repo=repo,
                                     username=self.client.username,
                                     scheme=(self.client._challenge or Challenge("none")).scheme, hint=hint)


class RegistryClient(contract_registry.RegistryClient):
    """The site registry: push and verify, with the installer's wording of failures (no retries: a re-run
    resumes, and the seed's steps are each checked)."""

    def __init__(self, base_url: str, session: requests.Session, *, username: Optional[str] = None,
                 password: Optional[str] = None, verify: Union[bool, str] = True, timeout: float = 60.0,
                 **kwargs: object) -> None:
        super().__init__(base_url, session, username=username, password=password, verify=verify,
                         timeout=timeout, **kwargs)
        self.explain = InstallerExplain(self)

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
