"""RPMs: yum repodata -> libsolv dependency closure -> verified downloads -> a yum-3 readable repository."""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import requests

from bundler.sources import ProgressLike, http
from bundler.spec import Mirrors
from contract.errors import Error

REPO_NS = {"repo": "http://linux.duke.edu/metadata/repo"}
TARGET_ARCHES = ("x86_64", "noarch")
CHUNK = 1 << 20
RETRIES = 4
TIMEOUT = (10, 60)
# createrepo_c needs a unix time as revision to pin every timestamp: 2018-05-21, Kubernetes 1.10.3's release.
REPO_REVISION = 1526860800
HINT_REPOS = "check rpms.repos in the spec and the mirrors overlay (--mirrors)"
RepomdCheck = Callable[[Any, bytes, Optional[bytes]], None]  # (repo spec, repomd.xml, repomd.xml.asc or None)


@dataclass(frozen=True)
class RpmArtifact:
    """One RPM of the closure: where it comes from and what it must hash to."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    repo: str
    url: str  # upstream URL (before mirrors): it is the artifact's name
    sha256: str | None  # None when the repo only publishes sha1: hashed on download instead
    size: int

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @property
    def nvra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"

    @property
    def filename(self) -> str:
        return f"{self.nvra}.rpm"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RpmArtifact:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# ---------------------------------------------------------------- HTTP


def _get(session, url: str, what: str, stream: bool = False, missing_ok: bool = False):
    """GET with retries on connection resets and 5xx; an Error for anything else that is not 200.

    With missing_ok, a 404/410 answer is None (a file the repository need not publish).
    """
    last: BaseException | None = None
    for attempt in range(RETRIES):
        if attempt:
            time.sleep(0.25 * 2 ** attempt)
        try:
            resp = session.get(url, stream=stream, timeout=TIMEOUT)
        except requests.RequestException as e:  # resets, timeouts
            last = e
            continue
        if resp.status_code >= 500:
            last = RuntimeError(f"HTTP {resp.status_code}")
            resp.close()
            continue
        if resp.status_code in (404, 410) and missing_ok:
            resp.close()
            return None
        if resp.status_code != 200:
            resp.close()
            raise Error(f"HTTP {resp.status_code} for {url}", context=what, hint=HINT_REPOS)
        return resp
    raise Error(f"cannot download {url}: {last}", context=what,
                hint="the server kept failing; check the network or the mirror and re-run")


class _BrokenOff(Exception):
    """The body stopped mid-way: worth another attempt from the start."""


def _stream(session, url: str, write: Callable[[bytes], object], what: str) -> tuple[str, str, int]:
    """Stream url into write(); return its (sha256, sha1, size)."""
    resp = _get(session, url, what, stream=True)
    sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0
    try:
        for chunk in resp.iter_content(CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
            size += len(chunk)
            write(chunk)
    except (OSError, ValueError) as e:  # requests' ChunkedEncodingError / ConnectionError are OSErrors
        raise _BrokenOff(str(e)) from e
    finally:
        resp.close()
    return sha256.hexdigest(), sha1.hexdigest(), size


def _retrying(func, url: str, what: str):
    """Call func() again when the body broke off, up to RETRIES times."""
    for attempt in range(RETRIES):
        try:
            return func()
        except _BrokenOff as e:
            if attempt == RETRIES - 1:
                raise Error(f"download of {url} kept breaking off: {e}", context=what, hint="re-run to retry") from None
            time.sleep(0.25 * 2 ** attempt)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- repodata


@dataclass(frozen=True)
class _MdFile:
    href: str
    checksum_type: str
    checksum: str


def _repomd_primary(xml: bytes, url: str) -> _MdFile:
    """The primary metadata's location and checksum from repomd.xml."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise Error(f"{url} is not a repomd.xml: {e}", context="reading yum repository metadata",
                    hint=HINT_REPOS) from e
    for data in root.findall("repo:data", REPO_NS):
        if data.get("type") == "primary":
            loc = data.find("repo:location", REPO_NS)
            ck = data.find("repo:checksum", REPO_NS)
            if loc is None or ck is None or not loc.get("href"):
                break
            return _MdFile(loc.get("href"), (ck.get("type") or "sha256").lower(), (ck.text or "").strip())
    raise Error(f"{url} lists no primary metadata", context="reading yum repository metadata", hint=HINT_REPOS)


def _load_primary(session, pool, repo_spec, mirrors, tmp: Path, check_repomd: RepomdCheck | None = None):
    """Download one repo's primary (checked against repomd, repomd by the hook) and add it to the pool."""
    import solv

    base = repo_spec.baseurl.rstrip("/") + "/"
    what = f"reading repository {repo_spec.name!r} ({base})"
    url, _ = mirrors.url_for(base + "repodata/repomd.xml")
    resp = _get(session, url, what)
    if check_repomd is not None:
        asc_url, _ = mirrors.url_for(base + "repodata/repomd.xml.asc")
        asc = _get(session, asc_url, what, missing_ok=True)  # most repos publish none
        check_repomd(repo_spec, resp.content, asc.content if asc is not None else None)
    primary = _repomd_primary(resp.content, url)
    purl, _ = mirrors.url_for(base + primary.href)
    # keep the compression suffix: libsolv's xfopen picks the decompressor from it
    local = tmp / f"{repo_spec.name}-{Path(primary.href).name}"

    def attempt():
        with open(local, "wb") as f:
            return _stream(session, purl, f.write, what)

    sha256, sha1, _size = _retrying(attempt, purl, what)
    got = {"sha256": sha256, "sha": sha1, "sha1": sha1}.get(primary.checksum_type)
    if got is not None and got != primary.checksum:
        raise Error(f"{purl}: {primary.checksum_type} is {got}, repomd.xml says {primary.checksum}",
                    context=what, hint="the mirror is inconsistent or being updated; re-run later")
    repo = pool.add_repo(repo_spec.name)
    fp = solv.xfopen(str(local))
    if fp is None:
        raise Error(f"cannot open {primary.href}", context=what, hint="unsupported compression?")
    try:
        if not repo.add_rpmmd(fp, None, 0):
            raise Error(f"cannot parse {purl}: {pool.errstr}", context=what, hint=HINT_REPOS)
    finally:
        fp.close()
    repo.appdata = base
    return repo


# ---------------------------------------------------------------- solving


def _split_evr(evr: str) -> tuple[str, str, str]:
    """'[epoch:]version[-release]' -> (epoch or '', version, release or '')."""
    epoch, _, rest = evr.rpartition(":") if ":" in evr else ("", "", evr)
    version, _, release = rest.partition("-")
    return epoch, version, release


def pin_matches(pin: str, evr: str) -> bool:
    """Whether a spec version pin (18.09.1, 18.09.1-3.el7, 3:18.09.1-3.el7) matches a solvable's evr."""
    pe, pv, pr = _split_evr(pin)
    se, sv, sr = _split_evr(evr)
    return pv == sv and (not pr or pr == sr) and (not pe or int(pe) == int(se or 0))


def _installed_copy(pool, system, s) -> None:
    """Copy solvable s into the @System repo: what the target already has."""
    import solv

    n = system.add_solvable()
    n.name, n.evr, n.arch = s.name, s.evr, s.arch
    if s.vendorid:  # a vendor change would forbid updating it
        n.vendorid = s.vendorid
    for key in (solv.SOLVABLE_PROVIDES, solv.SOLVABLE_REQUIRES, solv.SOLVABLE_CONFLICTS,
                solv.SOLVABLE_OBSOLETES):
        for dep in s.lookup_deparray(key):
            n.add_deparray(key, dep)
    # primary's file entries become plain provides: file requires resolve against them
    flags = solv.Dataiterator.SEARCH_FILES | solv.Dataiterator.SEARCH_COMPLETE_FILELIST
    for match in s.Dataiterator(solv.SOLVABLE_FILELIST, None, flags):
        n.add_provides(pool.Dep(match.str))


def _by_name(pool, repos) -> dict[str, list]:
    """Every solvable of the target's arches, grouped by name."""
    out: dict[str, list] = {}
    for repo in repos:
        for s in repo.solvables:
            if s.arch in TARGET_ARCHES:
                out.setdefault(s.name, []).append(s)
    return out


def _best(solvables: list):
    """The highest evr of a list (x86_64 before noarch on a tie)."""
    best = None
    for s in solvables:
        if best is None or s.evrcmp(best) > 0 or (s.evrcmp(best) == 0 and s.arch == "x86_64"):
            best = s
    return best


def solve(pool, repos, base: Sequence[str], packages) -> list:
    """Mark base names installed, install every package; return the new solvables or raise Error."""
    import solv

    names = _by_name(pool, repos)
    system = pool.add_repo("@System")
    missing_base = [b for b in base if b not in names]
    if missing_base:
        raise Error(f"rpms.base names {', '.join(missing_base)}, found in no repository",
                    context="resolving the RPM closure",
                    details=[_did_you_mean(b, names) for b in missing_base],
                    hint="rpms.base lists packages a minimal CentOS 7 install has; fix the name or add the repo")
    for b in base:
        # the target has what its release media had: the first repo (spec order) listing the name
        for repo in repos:
            candidates = [s for s in names[b] if s.repo == repo]
            if candidates:
                _installed_copy(pool, system, _best(candidates))
                break
    system.internalize()
    pool.installed = system
    pool.addfileprovides()
    pool.createwhatprovides()

    jobs, problems = [], []
    for pkg in packages:
        candidates = names.get(pkg.name)
        if not candidates:
            problems.append(_did_you_mean(pkg.name, names))
            continue
        if pkg.version:
            pinned = [s for s in candidates if pin_matches(pkg.version, s.evr)]
            if not pinned:
                have = ", ".join(sorted({s.evr for s in candidates}))
                problems.append(f"{pkg.name} {pkg.version}: no such version (available: {have})")
                continue
            candidates = pinned
        jobs.append(pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_ONE_OF,
                             pool.towhatprovides([s.id for s in candidates])))
    if problems:
        raise Error(f"{len(problems)} requested package{'s' if len(problems) > 1 else ''} not found",
                    context="resolving the RPM closure", details=problems,
                    hint="check rpms.packages names and version pins against the repositories")

    solver = pool.Solver()
    # yum 3 on the target does not install weak dependencies: neither do we
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
    found = solver.solve(jobs)
    if found:
        raise Error(f"the RPM closure cannot be resolved ({len(found)} problem{'s' if len(found) > 1 else ''})",
                    context="resolving the RPM closure", details=_describe(found),
                    hint="a required capability is missing: add the repository that provides it, "
                         "or move the package into rpms.base if the target already has it")
    trans = solver.transaction()
    return [s for s in trans.newsolvables() if s.repo != system]


def _describe(problems) -> list[str]:
    """One line per rule of every problem, naming the requiring package and the missing capability."""
    import solv

    lines: list[str] = []
    for i, problem in enumerate(problems, 1):
        for rule in problem.findallproblemrules():
            for info in rule.allinfos():
                if info.type == solv.Solver.SOLVER_RULE_PKG_NOTHING_PROVIDES_DEP:
                    text = f"{info.solvable} requires {info.dep}, which no repository provides"
                elif info.type == solv.Solver.SOLVER_RULE_PKG_REQUIRES:
                    text = f"{info.solvable} requires {info.dep}, but none of its providers can be installed"
                else:
                    text = info.problemstr()
                line = f"problem {i}: {text}"
                if line not in lines:
                    lines.append(line)
    return lines


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"no package named {name!r} in any repository{hint}"


def _artifact(s) -> RpmArtifact:
    """An RpmArtifact from a solvable of one of the spec's repos."""
    import solv

    epoch, version, release = _split_evr(s.evr)
    href, _ = s.lookup_location()
    chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    sha256 = chk.hex() if chk is not None and chk.type == solv.REPOKEY_TYPE_SHA256 else None
    return RpmArtifact(
        name=s.name, epoch=int(epoch or 0), version=version, release=release, arch=s.arch,
        repo=s.repo.name, url=s.repo.appdata + href, sha256=sha256,
        size=int(s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE) or 0),
    )


def resolve(spec, session, check_repomd: RepomdCheck | None = None) -> list[RpmArtifact]:
    """The RPMs the target needs beyond its base: the closure of spec's packages, sorted by nevra.

    check_repomd(repo, repomd.xml bytes, repomd.xml.asc bytes or None) sees each repo's metadata before it is used.
    """
    import solv

    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch(spec.rpms.arch)
    with tempfile.TemporaryDirectory(prefix="bundler-repodata-") as tmp:
        repos = [_load_primary(session, pool, r, spec.mirrors, Path(tmp), check_repomd) for r in spec.rpms.repos]
    new = solve(pool, repos, spec.rpms.base, spec.selected_packages())
    return sorted((_artifact(s) for s in new), key=lambda a: a.nevra)


# ---------------------------------------------------------------- downloading


def fetch(artifacts: Sequence[RpmArtifact], cache, session, jobs: int = 4, progress: ProgressLike = None,
          mirrors: Mirrors | None = None) -> dict:
    """Download every RPM into the cache in parallel (through mirrors), verifying sha256 and size."""
    mirrors = mirrors or Mirrors()
    items = [http.item(a.url, mirrors, a.sha256, a.size or None, name=a.filename) for a in artifacts]
    stats = http.download(items, cache, session, jobs=jobs, progress=progress, label="RPMs")
    # repos that publish only sha1 leave sha256 unpinned: what we hashed on the way is the pin now
    return {"downloaded_bytes": stats.downloaded_bytes, "cache_hits": stats.cache_hits,
            "sha256": {r.url: r.sha256 for r in stats.results}}


# ---------------------------------------------------------------- the yum repository


def make_repo(rpm_files: Sequence[Path], out_dir: Path, revision: int = REPO_REVISION) -> list[Path]:
    """Write out_dir/Packages/*.rpm and out_dir/repodata/ (yum 3 readable, reproducible); list the files."""
    out_dir = Path(out_dir)
    pkgs = out_dir / "Packages"
    if out_dir.exists():
        shutil.rmtree(pkgs, ignore_errors=True)
        shutil.rmtree(out_dir / "repodata", ignore_errors=True)
    pkgs.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for src in rpm_files:
        src = Path(src)
        dest = pkgs / src.name
        if dest.exists():
            raise Error(f"two RPMs named {src.name}", context="writing the yum repository",
                        hint="the closure lists one file twice; this is a bug")
        try:
            os.link(src, dest)
        except OSError:  # another file system or no hardlink support
            shutil.copyfile(src, dest)
        # primary.xml records each file's mtime: pin it so the metadata does not depend on when we downloaded
        os.utime(dest, (revision, revision))
        written.append(dest)
    cmd = ["createrepo_c", "--quiet", "--database", "--checksum", "sha256",
           "--general-compress-type", "gz", "--revision", str(revision), "--set-timestamp-to-revision",
           "--workers", "1", str(out_dir)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise Error("createrepo_c is not installed", context="writing the yum repository",
                    hint="install it (apt-get install createrepo-c / dnf install createrepo_c)") from e
    if proc.returncode != 0:
        raise Error(f"createrepo_c failed (exit {proc.returncode})", context="writing the yum repository",
                    details=[line for line in (proc.stderr or proc.stdout).splitlines()[-10:]],
                    hint="an RPM may be damaged; delete it from the cache and re-run")
    written.extend(sorted(p for p in (out_dir / "repodata").iterdir() if p.is_file()))
    return written
