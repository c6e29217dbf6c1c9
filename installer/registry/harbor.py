"""Harbor's projects API (1.4: /api, 2.x: /api/v2.0): detect the version, create the project if missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urlsplit

import requests

from contract.errors import Error
from installer.registry.client import _short, read_password

V1 = "1"  # Harbor 1.x: /api/projects, metadata.public as the string "true"
V2 = "2.0"  # Harbor 2.x: /api/v2.0/projects, HEAD ?project_name=


@dataclass(frozen=True)
class ProjectResult:
    """What ensure_project found or did."""

    project: str
    api: str  # V1 or V2
    harbor_version: str
    created: bool


class NoHarborAPI(Error):
    """The server answers neither Harbor systeminfo endpoint: a plain registry v2, which has no projects."""


class HarborAPI:
    """Harbor's REST API over an injected requests Session, with basic auth."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        verify: Union[bool, str] = True,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = urlsplit(self.base_url).netloc
        self.session = session
        self.auth = (username, password or "") if username is not None else None
        self.username = username
        self.verify = verify
        self.timeout = timeout
        self._api: Optional[str] = None
        self.harbor_version = ""

    @classmethod
    def for_registry(
        cls,
        registry: object,
        session: requests.Session,
        *,
        password: Optional[str] = None,
        api_url: Optional[str] = None,
    ) -> "HarborAPI":
        """The API of an inventory `Registry` (same origin as the registry unless api_url is given)."""
        scheme = "http" if registry.insecure else "https"
        if password is None and registry.password_file:
            password = read_password(registry.password_file)
        return cls(
            api_url or f"{scheme}://{registry.hostname}:{registry.port}",
            session,
            username=registry.username,
            password=password,
            verify=registry.ca_file or True,
        )

    def _send(self, method: str, path: str, doing: str, **kwargs: object) -> requests.Response:
        url = self.base_url + path
        try:
            return self.session.request(
                method,
                url,
                auth=self.auth,
                verify=self.verify,
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.SSLError as e:
            hint = (
                (
                    f"the CA file {self.verify} did not sign Harbor's certificate: set registry.ca_file to the "
                    "CA certificate that did"
                )
                if isinstance(self.verify, str)
                else ("set registry.ca_file to the CA certificate that signed Harbor's certificate")
            )
            raise Error(
                f"the TLS certificate of {self.endpoint} is not trusted",
                context=doing,
                hint=hint,
                details=[_short(e)],
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise Error(
                f"cannot reach Harbor at {self.endpoint}",
                context=doing,
                details=[_short(e)],
                hint="check that Harbor runs and that registry.hostname/port are right",
            ) from None

    def _fail(self, resp: requests.Response, doing: str, project: str) -> Error:
        details = [f"HTTP {resp.status_code}: {_short(resp.text) or '(empty body)'}"]
        if resp.status_code == 401:
            return Error(
                f"Harbor at {self.endpoint} refused the credentials of user {self.username!r}",
                context=doing,
                details=details,
                hint="check registry.username and the password in registry.password_file",
            )
        if resp.status_code == 403:
            return Error(
                f"user {self.username!r} may not create the project {project!r} on {self.endpoint}",
                context=doing,
                details=details,
                hint=f"create the project {project!r} in Harbor's UI (or use an admin account), "
                "or set registry.project to an existing project the user may push to",
            )
        if resp.status_code == 400:
            return Error(
                f"Harbor refused the project name {project!r}",
                context=doing,
                details=details,
                hint="project names are lower-case letters, digits, '.', '_' and '-' "
                "(check registry.project)",
            )
        return Error(
            f"Harbor at {self.endpoint} answered HTTP {resp.status_code}", context=doing, details=details
        )

    def api(self) -> str:
        """The API flavour: V2 when /api/v2.0/systeminfo answers, else V1 when /api/systeminfo does."""
        if self._api is None:
            doing = f"detecting the Harbor version at {self.endpoint}"
            for api, path in ((V2, "/api/v2.0/systeminfo"), (V1, "/api/systeminfo")):
                resp = self._send("GET", path, doing)
                if resp.status_code == 200:
                    try:
                        self.harbor_version = str(resp.json().get("harbor_version", ""))
                    except ValueError:
                        continue  # not JSON: some other server answered 200
                    self._api = api
                    break
                if resp.status_code == 401:
                    raise self._fail(resp, doing, "")
            else:
                raise NoHarborAPI(
                    f"no Harbor API at {self.base_url}",
                    context=doing,
                    hint="neither /api/v2.0/systeminfo nor /api/systeminfo answered: is this Harbor? "
                    "(a plain registry has no projects; use registry.mode external with an "
                    "existing project)",
                )
        return self._api

    def project_exists(self, name: str) -> bool:
        """Whether the project exists (and the user can see it)."""
        doing = f"looking up the Harbor project {name!r}"
        if self.api() == V2:
            resp = self._send("HEAD", "/api/v2.0/projects", doing, params={"project_name": name})
            if resp.status_code in (200, 404):
                return resp.status_code == 200
            raise self._fail(resp, doing, name)
        resp = self._send("GET", "/api/projects", doing, params={"name": name})
        if resp.status_code != 200:
            raise self._fail(resp, doing, name)
        try:
            found = resp.json() or []  # Harbor 1.x answers null for no match
        except ValueError:
            raise Error(
                f"Harbor at {self.endpoint} answered a project search with non-JSON",
                context=doing,
                details=[_short(resp.text)],
            ) from None
        return any(p.get("name") == name for p in found)  # ?name= is a substring match

    def create_project(self, name: str, public: bool = True) -> bool:
        """Create a project; False when it already existed (409)."""
        doing = f"creating the Harbor project {name!r}"
        if self.api() == V2:
            body: dict = {
                "project_name": name,
                "public": public,
                "metadata": {"public": "true" if public else "false"},
            }
            path = "/api/v2.0/projects"
        else:
            body = {"project_name": name, "metadata": {"public": "true" if public else "false"}}
            path = "/api/projects"
        resp = self._send("POST", path, doing, json=body)
        if resp.status_code in (200, 201):
            return True
        if resp.status_code == 409:
            return False
        raise self._fail(resp, doing, name)

    def ensure_project(self, name: str, public: bool = True) -> ProjectResult:
        """Create the project unless it exists (idempotent); its visibility is set only on creation."""
        api = self.api()
        created = False if self.project_exists(name) else self.create_project(name, public)
        return ProjectResult(name, api, self.harbor_version, created)
