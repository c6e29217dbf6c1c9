"""Image references: ONE parser for both programs, with docker's defaults (docker.io, library/, latest).

Grammar (docker's, simplified): [registry[:port]/]path[:tag][@sha256:hex]. The first component is the
registry only if it looks like a host: it has a '.' or a ':' or is `localhost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from contract.errors import EXIT_INVALID, Error

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
REF_RE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")


class InvalidReference(Error, ValueError):
    """Text that is not an image reference. A ValueError too: spec validation reports it at its YAML path."""

    exit_code = EXIT_INVALID


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: Optional[str]
    digest: Optional[str]

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse a reference or raise InvalidReference."""
        m = REF_RE.match(text)
        if not m:
            raise InvalidReference(f"not a valid image reference: {text!r}")
        domain = m.group("domain")
        path = m.group("path")
        if domain and not ("." in domain or ":" in domain or domain == "localhost"):
            if not _COMPONENT_RE.match(domain):
                raise InvalidReference(f"not a valid image reference: {text!r} (repository names are lower-case)")
            path = f"{domain}/{path}"
            domain = None
        registry = domain or DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        digest = m.group("digest")
        return cls(registry, path, m.group("tag") or (None if digest else "latest"), digest)

    @property
    def name(self) -> str:
        """registry/repository, e.g. docker.io/coredns/coredns."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_ref(text: str) -> Reference:
    """Parse an image reference or raise InvalidReference (a ValueError)."""
    return Reference.parse(text)
