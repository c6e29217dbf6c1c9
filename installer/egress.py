"""Zero egress, proven: every image reference the cluster will pull, where it comes from, and why it may not.

The desired state ({host: {path: File}}) is read, not grepped:
  - YAML files (*.yaml, *.yml; the addon manifests): every object's containers and initContainers, at any depth
    (Deployment, DaemonSet, Pod, List items, ...), each named by kind, namespace/name and container;
  - other text files (EnvironmentFiles, units): every `--<...>image=REF` / `--<...>image REF` flag in a
    KEY="..." value or a command line (kubelet's --pod-infra-container-image).
Problems: a reference outside the site registry (inventory.registry.endpoint), one the bundle's image layout
does not hold (seeded as <endpoint>/<project>/<name>:<tag>, installer.registry.seed), and, given a registry
client (check, apply after seeding), one the site registry lacks or serves with another manifest digest.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from contract.errors import Error
from installer.checks import Result
from installer.inventory import Inventory
from installer.plan_rules import is_secret
from installer.render import File

CHECK_NAME = "images (zero egress)"
YAML_SUFFIXES = (".yaml", ".yml")
CONTAINER_KEYS = ("initContainers", "containers")
_FLAG = re.compile(r"^--?(?P<name>[a-z0-9-]*image)(?:=(?P<value>.*))?$")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_UNQUOTE = str.maketrans("", "", "\\\"'")


@dataclass(frozen=True)
class ImageRef:
    """One image reference and where it is written."""

    ref: str
    host: str
    path: str
    obj: Optional[str] = None  # manifests: "Deployment kube-system/kube-dns"
    container: Optional[str] = None  # manifests: "container kubedns" / "initContainer init"
    flag: Optional[str] = None  # flag files: "--pod-infra-container-image"

    @property
    def where(self) -> str:
        what = f"{self.obj} {self.container}" if self.obj else (self.flag or "")
        return f"{self.host}:{self.path}" + (f" {what}" if what else "")

    def to_dict(self) -> dict:
        d = {"ref": self.ref, "where": self.where, "host": self.host, "path": self.path}
        d.update({k: v for k, v in (("object", self.obj), ("container", self.container), ("flag", self.flag)) if v})
        return d


@dataclass(frozen=True)
class Problem:
    """Why one reference (or a whole file) breaks zero egress."""

    where: str
    ref: str
    why: str

    def line(self) -> str:
        return f"{self.where}: {self.ref}: {self.why}" if self.ref else f"{self.where}: {self.why}"


@dataclass(frozen=True)
class BundleImage:
    """An image of the bundle as the site registry holds it after seeding."""

    repo: str  # <endpoint>/<project>/<name>
    tag: Optional[str]
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else f"{self.repo}@{self.digest}"


@dataclass
class Report:
    """Every reference found and every problem; registry_checked says whether the site registry was asked."""

    endpoint: str
    refs: List[ImageRef] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    registry_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_ref(self) -> Dict[str, List[ImageRef]]:
        out: Dict[str, List[ImageRef]] = {}
        for r in self.refs:
            out.setdefault(r.ref, []).append(r)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {"registry": self.endpoint, "ok": self.ok, "registry_checked": self.registry_checked,
                "references": [r.to_dict() for r in self.refs], "problems": [p.line() for p in self.problems]}

    def text(self) -> str:
        lines = [f"== images (zero egress: every reference from {self.endpoint})"]
        for ref, where in self.by_ref().items():
            lines.append(f"  {ref}")
            same: Dict[Tuple, List[str]] = {}  # one line per file and flag/container, however many hosts
            for r in where:
                same.setdefault((r.path, r.obj, r.container, r.flag), []).append(r.host)
            for (path, obj, container, flag), hosts in same.items():
                what = f"{obj} {container}" if obj else (flag or "")
                lines.append(f"      {', '.join(hosts)}:{path}" + (f" {what}" if what else ""))
        lines += [f"  PROBLEM {p.line()}" for p in self.problems]
        return "\n".join(lines)

    def error(self, doing: str = "listing every image the cluster pulls") -> Error:
        n = len(self.problems)
        return Error(f"{n} image reference problem{'s' if n != 1 else ''}: the cluster would pull from outside "
                     f"the site registry {self.endpoint} or an image it does not hold",
                     context=doing, details=[p.line() for p in self.problems],
                     hint=f"every image must be <{self.endpoint}>/<project>/<name>:<tag> of an image in the bundle: "
                          "fix the manifest or flag named, or build the bundle with the image (bundle-spec.yaml "
                          "images:) and seed the registry (`installer seed` or apply)")


# ------------------------------------------------------------------ finding references


def references(files_by_host: Mapping[str, Mapping[str, File]]) -> Tuple[List[ImageRef], List[Problem]]:
    """Every image reference of every host's files, and the files that could not be read for them."""
    refs: List[ImageRef] = []
    problems: List[Problem] = []
    parsed: Dict[str, object] = {}  # YAML text -> its references (host and path left blank) or its YAMLError
    for host, files in sorted(files_by_host.items()):
        for path, f in sorted(files.items()):
            if is_secret(path, f):
                continue  # keys and kubeconfigs name no image, and their content is never parsed
            try:
                text = f.content.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if path.endswith(YAML_SUFFIXES):
                if text not in parsed:  # the same manifest on many hosts is parsed once
                    try:
                        parsed[text] = manifest_references(text, "", "")
                    except yaml.YAMLError as e:
                        parsed[text] = e
                got = parsed[text]
                if isinstance(got, yaml.YAMLError):
                    problems.append(Problem(f"{host}:{path}", "", f"not valid YAML, its images cannot be listed: "
                                            f"{str(got).splitlines()[0]}"))
                else:
                    refs += [dataclasses.replace(r, host=host, path=path) for r in got]  # type: ignore[union-attr]
            else:
                refs += flag_references(text, host, path)
    return refs, problems


def manifest_references(text: str, host: str, path: str) -> List[ImageRef]:
    """The image of every container and initContainer of every object in a multi-document YAML text."""
    out: List[ImageRef] = []
    for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: every run
        for obj, key, c in _containers(doc, None):
            kind = "initContainer" if key == "initContainers" else "container"
            name = c.get("name") if isinstance(c, dict) else None
            image = c.get("image") if isinstance(c, dict) else None
            out.append(ImageRef(image if isinstance(image, str) else "", host, path, obj=obj,
                                container=f"{kind} {name or '?'}"))
    return out


def _name(obj: dict) -> Optional[str]:
    """'Kind namespace/name' of a Kubernetes object, or None for a dict that is not one."""
    meta = obj.get("metadata")
    if not isinstance(obj.get("kind"), str) or not isinstance(meta, dict):
        return None
    ns = meta.get("namespace")
    return f"{obj['kind']} {ns + '/' if ns else ''}{meta.get('name', '?')}"


def _containers(node: object, owner: Optional[str]) -> Iterator[Tuple[str, str, object]]:
    """(owning object, containers key, container) anywhere below node: pod specs nest at any depth."""
    if isinstance(node, dict):
        owner = _name(node) or owner
        for key, value in node.items():
            if key in CONTAINER_KEYS and isinstance(value, list):
                for c in value:
                    yield owner or "(object without kind/metadata)", key, c
            else:
                yield from _containers(value, owner)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item, owner)


def flag_references(text: str, host: str, path: str) -> List[ImageRef]:
    """Image flags in shell-like lines: KEY="--a=b --x-image=REF" (EnvironmentFile) or a command line."""
    out: List[ImageRef] = []
    for line in text.splitlines():
        # every flag _FLAG matches ends in "image", which no line without those letters can give after the
        # shell's quote removal (quotes and backslashes taken out first): most lines need no split at all
        if "image" not in line.translate(_UNQUOTE):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # not shell syntax (an unbalanced quote in JSON or prose): plain words
            tokens = line.split()
        words: List[str] = []
        for tok in tokens:
            # KUBELET_ARGS="--a --b": the value of an assignment holds the flags, space-separated
            words += tok.split("=", 1)[1].split() if _ASSIGN.match(tok) else [tok]
        for i, w in enumerate(words):
            m = _FLAG.match(w)
            if not m:
                continue
            value = m.group("value")
            if value is None:
                value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else ""
            out.append(ImageRef(value, host, path, flag=f"--{m.group('name')}"))
    return out


# ------------------------------------------------------------------ judging them


def bundle_images(layout_dir: Path, endpoint: str, project: str, naming: str) -> List[BundleImage]:
    """The bundle's images under the names seeding gives them in the site registry."""
    from installer.registry.seed import Layout

    return [BundleImage(f"{endpoint}/{img.repo}", img.tag, img.digest)
            for img in Layout(layout_dir).images(project, naming)]


def _parse(ref: str):
    from contract.reference import Reference

    try:
        return Reference.parse(ref)
    except ValueError:
        return None


def _same_registry(domain: str, endpoint: str) -> bool:
    host, _, port = endpoint.partition(":")
    return domain == endpoint or (not port and domain in (f"{host}:443", f"{host}:80"))


def _match(r, endpoint: str, bundle: Sequence[BundleImage]) -> Optional[BundleImage]:
    """The bundle image a parsed site-registry reference names (by digest when it has one, else by tag)."""
    repo = f"{endpoint}/{r.repository}"
    for b in bundle:
        if b.repo == repo and (b.digest == r.digest if r.digest else b.tag == r.tag):
            return b
    return None


def _served_digest(registry, repo: str, reference: str) -> Optional[str]:
    """The manifest digest the registry serves (HEAD; GET and hash when HEAD names none), None when absent."""
    from installer.registry.client import sha256_digest

    digest = registry.manifest_digest(repo, reference)
    if digest is None and hasattr(registry, "get_manifest"):
        try:
            data, _media_type = registry.get_manifest(repo, reference)
        except Error:
            return None  # HEAD answered 404 (or no digest and GET fails): not there
        digest = sha256_digest(data)
    return digest


def judge(refs: Sequence[ImageRef], endpoint: str, bundle: Sequence[BundleImage],
          registry: Optional[object] = None) -> List[Problem]:
    """Problems of each reference: registry, bundle, and (with a registry client) presence and digest."""
    problems: List[Problem] = []
    asked: Dict[Tuple[str, str], Tuple[Optional[str], str]] = {}  # (repo, reference) -> (digest, error)
    for r in refs:
        if not r.ref:
            problems.append(Problem(r.where, "", "no image reference"))
            continue
        parsed = _parse(r.ref)
        if parsed is None:
            problems.append(Problem(r.where, r.ref, "not an image reference"))
            continue
        if not _same_registry(parsed.registry, endpoint):
            problems.append(Problem(r.where, r.ref, f"registry {parsed.registry} is not the site registry {endpoint} "
                                    "(a pull would leave the site)"))
            continue
        b = _match(parsed, endpoint, bundle)
        if b is None:
            problems.append(Problem(r.where, r.ref, "not an image of the bundle (the site registry is seeded only "
                                    "from the bundle)"))
            continue
        if registry is None:
            continue
        key = (parsed.repository, parsed.digest or parsed.tag or "")
        if key not in asked:
            try:
                asked[key] = (_served_digest(registry, *key), "")
            except Error as e:
                asked[key] = (None, f"the site registry did not answer: {e.message}")
        digest, failed = asked[key]
        if failed:
            problems.append(Problem(r.where, r.ref, failed))
        elif digest is None:
            problems.append(Problem(r.where, r.ref, f"not in the site registry {endpoint} (seed it: `installer "
                                    "seed` or apply)"))
        elif digest != b.digest:
            problems.append(Problem(r.where, r.ref, f"the site registry serves {digest}, the bundle has {b.digest}"))
    return problems


def scan(files_by_host: Mapping[str, Mapping[str, File]], endpoint: str, bundle: Sequence[BundleImage],
         registry: Optional[object] = None) -> Report:
    """List and judge every image reference of the desired state; `registry`: a RegistryClient (or a fake)."""
    refs, unreadable = references(files_by_host)
    return Report(endpoint, refs, unreadable + judge(refs, endpoint, bundle, registry), registry is not None)


# ------------------------------------------------------------------ for `installer check`


def results(report: Report) -> List[Result]:
    """checks.Result objects: one ok line, or one FAIL per problem."""
    if report.ok:
        n = len(report.by_ref())
        where = "present with the bundle's digests" if report.registry_checked else "in the bundle"
        return [Result(CHECK_NAME, report.endpoint, True,
                       f"{n} image(s) in {len(report.refs)} place(s), all from {report.endpoint}, {where}")]
    return [Result(CHECK_NAME, p.where, False, f"{p.ref}: {p.why}" if p.ref else p.why) for p in report.problems]


def site_files(inv: Inventory, bundle_dir: Path) -> Dict[str, Dict[str, File]]:
    """What apply renders, as far as images go: every host's files and the addon manifests on the first master."""
    from contract.bundle import layout
    from installer import addons, render

    images, _naming = image_roles(bundle_dir, inv)
    files = render.render_all(inv, pki_files={}, images=images)
    if inv.masters:
        files[inv.masters[0].name].update(addons.files(bundle_dir / layout.MANIFESTS_DIR, inv, images))
    return files


def image_roles(bundle_dir: Path, inv: Inventory) -> Tuple[Dict[str, str], str]:
    """({role: reference in the site registry}, naming rule) from the bundle's spec and image layout."""
    from contract.bundle import layout
    from installer.registry import seed

    spec = yaml.safe_load((bundle_dir / layout.SPEC).read_text()) or {}
    naming = (spec.get("registry") or {}).get("naming", "last-component")
    refs = seed.seeded_refs(bundle_dir / layout.IMAGES_DIR, inv.registry.endpoint, inv.registry.project, naming)
    roles = {}
    for img in spec.get("images") or []:
        ref, role = img.get("ref"), img.get("role")
        if role and ref in refs:
            roles[role] = refs[ref]
    return roles, naming


def egress_results(inv: Inventory, state_root: Path, session) -> List[Result]:
    """The check: the desired state of this inventory and the bundle apply unpacked, against the site registry."""
    from contract.bundle import layout
    from installer import checks, harbor_install
    from installer.pki import Pki
    from installer.state import StateDir

    info = StateDir(Path(state_root)).bundle_info() or {}
    bundle_dir = Path(info["dir"]) if info.get("dir") else None
    if bundle_dir is None or not (bundle_dir / layout.IMAGES_INDEX).is_file():
        return [Result(CHECK_NAME, inv.registry.endpoint, False, f"no unpacked bundle in {state_root}: the images "
                       "cannot be compared (run apply with this --state first)")]
    try:
        _roles, naming = image_roles(bundle_dir, inv)
        bundle = bundle_images(bundle_dir / layout.IMAGES_DIR, inv.registry.endpoint, inv.registry.project, naming)
        files = site_files(inv, bundle_dir)
        access = harbor_install.access(inv, Path(state_root), Pki(Path(state_root)).crt_path("ca"))
        client = checks.registry_client(inv, session, **access)
        return results(scan(files, inv.registry.endpoint, bundle, client))
    except Error as e:
        return [Result(CHECK_NAME, inv.registry.endpoint, False, e.message)]
