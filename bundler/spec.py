"""bundle-spec.yaml: what a bundle holds (binaries, RPMs, images) and where it comes from; frozen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from contract.documents import Frozen, Loc, load_document, read_yaml, validate_data
from contract.errors import ValidationError
from contract.reference import Reference, parse_ref

HINT = "see the project's bundle-spec.yaml for a complete, valid spec"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9]+(?:/[a-z0-9]+)?$")


def _sha256(v: Optional[str]) -> Optional[str]:
    if v is not None and not SHA256_RE.match(v):
        raise ValueError("not a sha256 (64 lower-case hex digits)")
    return v


def _name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"not a valid name: {v!r} (lower-case letters, digits, '.', '_', '-')")
    return v


def _text(v: Any, info: ValidationInfo) -> Any:
    """A string field that YAML read as a number (version: 99.1): say to quote it, with the exact text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        field = info.field_name or "version"
        raise PydanticCustomError("number_not_string", "YAML read {value} as a number, not as text",
                                  {"value": repr(v), "hint": f'quote it: {field}: "{v}"'})
    return v


def _url(v: str) -> str:
    if not re.match(r"^(https?|file)://[^\s]+$", v):
        raise ValueError(f"not an http(s) URL: {v!r}")
    return v


class When(Frozen):
    """Include an item only when the spec's options say so."""

    dns: Optional[Literal["kube-dns", "coredns"]] = None
    docker: Optional[Literal["rpm", "static"]] = None


class Binary(Frozen):
    """A release file fetched over HTTP."""

    name: str
    version: str
    url: str
    sha256: Optional[str] = None  # pin; the lockfile pins it if absent here
    digest_url: Optional[str] = None  # upstream's published digest (.sha256 or SHA256SUMS)
    supplier: Optional[str] = None  # for the SBOM ("Organization: ..." or "Person: ..."); a default per upstream
    when: Optional[When] = None

    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))
    _u = field_validator("url", "digest_url")(classmethod(lambda cls, v: v if v is None else _url(v)))
    _s = field_validator("sha256")(classmethod(lambda cls, v: _sha256(v)))
    _v = field_validator("version", mode="before")(classmethod(lambda cls, v, info: _text(v, info)))

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class Repo(Frozen):
    """A yum repository (repodata/repomd.xml under baseurl)."""

    name: str
    baseurl: str
    gpgcheck: bool = True
    gpgkey: Optional[str] = None  # armored key URL
    fingerprints: Tuple[str, ...] = ()
    supplier: Optional[str] = None  # of its RPMs, for the SBOM; a default per repo host

    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))
    _u = field_validator("baseurl", "gpgkey")(classmethod(lambda cls, v: v if v is None else _url(v)))

    @field_validator("fingerprints")
    @classmethod
    def _fpr(cls, v: Tuple[str, ...]) -> Tuple[str, ...]:
        for f in v:
            if not re.match(r"^[0-9A-F]{40}$", f.replace(" ", "")):
                raise ValueError(f"not a full OpenPGP v4 fingerprint (40 hex digits): {f!r}")
        return tuple(f.replace(" ", "") for f in v)


class Package(Frozen):
    """An RPM the target must get, optionally pinned to a version (and release)."""

    name: str
    version: Optional[str] = None  # e.g. 18.09.1 or 18.09.1-3.el7
    when: Optional[When] = None

    _v = field_validator("version", mode="before")(classmethod(lambda cls, v, info: _text(v, info)))

    @field_validator("name")
    @classmethod
    def _pkg(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", v):
            raise ValueError(f"not a valid RPM package name: {v!r}")
        return v


class Rpms(Frozen):
    """RPMs resolved into a dependency closure for the target OS."""

    arch: Literal["x86_64"] = "x86_64"
    releasever: str = "7"

    _v = field_validator("releasever", mode="before")(classmethod(lambda cls, v, info: _text(v, info)))
    repos: Tuple[Repo, ...]
    base: Tuple[str, ...] = ()  # what a minimal target already has: never bundled
    packages: Tuple[Package, ...]


class Image(Frozen):
    """A container image copied by digest into the bundle's OCI layout."""

    ref: str
    platforms: Tuple[str, ...] = ("linux/amd64",)
    source: Literal["registry", "docker"] = "registry"
    role: Optional[str] = None  # what the installer renders it as: pause, dns, dashboard, ...
    supplier: Optional[str] = None  # for the SBOM; a default per registry/namespace
    when: Optional[When] = None

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        parse_ref(v)
        return v

    @field_validator("platforms")
    @classmethod
    def _plat(cls, v: Tuple[str, ...]) -> Tuple[str, ...]:
        if not v:
            raise ValueError("name at least one platform, e.g. linux/amd64")
        for p in v:
            if not PLATFORM_RE.match(p):
                raise ValueError(f"not a platform os/arch[/variant]: {p!r}")
        return v

    @property
    def parsed(self) -> Reference:
        return parse_ref(self.ref)


class UrlMirror(Frozen):
    """Fetch URLs starting with `from` from `to` instead (the original URL stays the artifact's name)."""

    from_: str = Field(alias="from")
    to: str

    _u = field_validator("from_", "to")(classmethod(lambda cls, v: _url(v)))


class RegistryMirror(Frozen):
    """Pull image references starting with `from` from `to` instead, keeping the original names."""

    from_: str = Field(alias="from")
    to: str
    insecure: bool = False  # plain HTTP (loopback stand-ins)
    username: Optional[str] = None
    password_env: Optional[str] = None  # the password is in this environment variable...
    password_file: Optional[str] = None  # ...or in this file (read when it is needed, never logged)

    @model_validator(mode="after")
    def _one_password(self) -> "RegistryMirror":
        if self.password_env and self.password_file:
            raise PydanticCustomError("two_passwords", "password_env and password_file are both set",
                                      {"hint": "keep one of them"})
        if (self.password_env or self.password_file) and not self.username:
            raise PydanticCustomError("password_without_user", "a password is named but no username",
                                      {"hint": "add username: to this mirror rule"})
        return self

    @property
    def password_source(self) -> Optional[str]:
        """Where the password comes from, for messages (never the password itself)."""
        if self.password_env:
            return f"environment variable {self.password_env}"
        if self.password_file:
            return f"file {self.password_file}"
        return None

    def password_path(self) -> Optional[Path]:
        """password_file as a path: `~` expanded, relative to the current directory (as the installer reads its
        registry.password_file)."""
        return Path(self.password_file).expanduser() if self.password_file else None


class Mirrors(Frozen):
    """URL and registry rewrites; an overlay file (--mirrors) takes precedence over the spec's."""

    urls: Tuple[UrlMirror, ...] = ()
    registries: Tuple[RegistryMirror, ...] = ()

    def url_for(self, url: str) -> Tuple[str, Optional[UrlMirror]]:
        """The URL to fetch for an upstream URL, and the rule that produced it (longest prefix wins)."""
        best = None
        for rule in self.urls:
            if url.startswith(rule.from_) and (best is None or len(rule.from_) > len(best.from_)):
                best = rule
        if best is None:
            return url, None
        return best.to + url[len(best.from_):], best

    def registry_for(self, name: str) -> Tuple[str, Optional[RegistryMirror]]:
        """The repository to pull for an upstream `registry/repository`, and the rule used."""
        best = None
        for rule in self.registries:
            f = rule.from_.rstrip("/")
            if (name == f or name.startswith(f + "/")) and (best is None or len(f) > len(best.from_)):
                best = rule
        if best is None:
            return name, None
        return best.to.rstrip("/") + name[len(best.from_.rstrip("/")):], best


class Options(Frozen):
    """Choices that select items marked with `when`."""

    dns: Literal["kube-dns", "coredns"] = "kube-dns"
    docker: Literal["rpm", "static"] = "rpm"


class Target(Frozen):
    """Where the images are pushed on site."""

    project: str = "kubernetes"
    naming: Literal["last-component", "keep-path"] = "last-component"


class Spec(Frozen):
    """The whole bundle specification."""

    name: str
    version: str
    options: Options = Options()
    binaries: Tuple[Binary, ...]
    rpms: Rpms
    images: Tuple[Image, ...]
    registry: Target = Target()
    manifests: Tuple[str, ...] = ()  # addon manifest templates under manifests/
    mirrors: Mirrors = Mirrors()

    _n = field_validator("name")(classmethod(lambda cls, v: _name(v)))
    _v = field_validator("version", mode="before")(classmethod(lambda cls, v, info: _text(v, info)))

    def _on(self, when: Optional[When]) -> bool:
        if when is None:
            return True
        return all(getattr(self.options, k) == v for k, v in when.model_dump(exclude_none=True).items())

    def selected_binaries(self) -> List[Binary]:
        return [b for b in self.binaries if self._on(b.when)]

    def selected_packages(self) -> List[Package]:
        return [p for p in self.rpms.packages if self._on(p.when)]

    def selected_images(self) -> List[Image]:
        return [i for i in self.images if self._on(i.when)]

    def with_mirrors(self, overlay: Mirrors) -> "Spec":
        merged = Mirrors(urls=overlay.urls + self.mirrors.urls,
                         registries=overlay.registries + self.mirrors.registries)
        return self.model_copy(update={"mirrors": merged})


def cross_checks(spec: Spec) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    """Problems across fields: duplicates and references to unknown repos."""
    seen: Dict[Any, int] = {}
    for i, b in enumerate(spec.binaries):
        key = ("binary", b.name, b.when.model_dump_json() if b.when else "")
        if key in seen:
            yield ("binaries", i, "name"), f"duplicate binary {b.name!r} (also binaries[{seen[key]}])", \
                "each binary appears once; use `when` to offer alternatives"
        seen.setdefault(key, i)
    names: Dict[str, int] = {}
    for i, r in enumerate(spec.rpms.repos):
        if r.name in names:
            yield ("rpms", "repos", i, "name"), f"duplicate repo {r.name!r}", "give every repo its own name"
        names.setdefault(r.name, i)
        if r.gpgcheck and r.fingerprints and not r.gpgkey:
            yield ("rpms", "repos", i, "gpgkey"), "fingerprints are pinned but no gpgkey URL is given", \
                "add the armored key URL the fingerprints belong to"
    pkgs: Dict[str, int] = {}
    for i, p in enumerate(spec.rpms.packages):
        key = p.name + (p.when.model_dump_json() if p.when else "")
        if key in pkgs:
            yield ("rpms", "packages", i, "name"), f"package {p.name!r} is listed twice", "list it once"
        pkgs.setdefault(key, i)
        if p.name in spec.rpms.base:
            yield ("rpms", "packages", i, "name"), f"{p.name!r} is also in rpms.base (already on the target)", \
                "remove it from one of the two lists"
    refs: Dict[str, int] = {}
    for i, img in enumerate(spec.images):
        key = str(img.parsed) + (img.when.model_dump_json() if img.when else "")
        if key in refs:
            yield ("images", i, "ref"), f"image {img.ref} is listed twice (also images[{refs[key]}])", "list it once"
        refs.setdefault(key, i)
    yield from mirror_checks(spec.mirrors)
    if not spec.selected_images():
        yield ("images",), "no image is selected by the options", "check options and the images' `when`"


def mirror_checks(mirrors: Mirrors, top: Tuple[str, ...] = ("mirrors",)) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    """A registry mirror's password_file must be a readable file (it is read again when it is used)."""
    for i, rule in enumerate(mirrors.registries):
        problem = password_file_problem(rule)
        if problem:
            yield top + ("registries", i, "password_file"), problem, \
                "point password_file at a readable file holding the password (~ and relative paths are taken " \
                "from the current directory)"


def password_file_problem(rule: RegistryMirror) -> Optional[str]:
    """Why a rule's password_file cannot be read, or None (also None without a password_file)."""
    path = rule.password_path()
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return f"password file {path} does not exist"
    except IsADirectoryError:
        return f"password file {path} is a directory"
    except OSError as e:
        return f"password file {path} is not readable: {e.strerror}"
    return None


def load_mirrors(path: Path) -> Mirrors:
    """Load a mirrors overlay file (top-level key `mirrors:`)."""
    data, lines = read_yaml(Path(path), "mirrors file")
    if not isinstance(data, dict) or "mirrors" not in data:
        raise ValidationError(f"{path}: the mirrors file needs a top-level `mirrors:` key",
                              context="reading the mirrors overlay", hint="see tests/fixtures output mirrors.yaml")

    class _File(Frozen):
        mirrors: Mirrors

    return validate_data(data, _File, str(path), "mirrors file", "keys: mirrors.urls, mirrors.registries",
                         checks=lambda f: mirror_checks(f.mirrors), lines=lines).mirrors


def load(path: Path, mirrors: Optional[Path] = None) -> Spec:
    """Load and validate a spec, with an optional mirrors overlay on top."""
    spec = load_document(Path(path), Spec, "bundle spec", HINT, cross_checks)
    if mirrors is not None:
        spec = spec.with_mirrors(load_mirrors(mirrors))
    return spec
