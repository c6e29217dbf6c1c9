"""The installer travels in the bundle as wheels (its own and its dependencies'), pinned with hashes.

The offline control host needs only Python 3 and openssl: it verifies the bundle, extracts `installer/`,
then `pip install --no-index --find-links installer/wheels --require-hashes -r installer/requirements-cpXY.txt`.
Dependencies are fetched once per (project version, dependency pins, Python version) and kept in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from contract.digest import sha256_file
from contract.errors import Error

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYTHONS = ("3.9", "3.10", "3.11", "3.12")
PLATFORM = "manylinux2014_x86_64"
# pip names the manylinux tags differently across wheels; accept any x86_64 manylinux wheel
EXTRA_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
PROJECT = "k8s-offline"  # the installer's own distribution: its wheel is built here, not downloaded
WHEEL_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can record


@dataclass(frozen=True)
class InstallerFiles:
    """Files to put under installer/ in the bundle: (path inside installer/, source path)."""

    files: Tuple[Tuple[str, Path], ...]
    pythons: Tuple[str, ...]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_pins(dist: str = PROJECT) -> List[str]:
    """The installer's direct runtime dependencies pinned to the versions of this environment."""
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        raise Error(f"the {dist} distribution is not installed in this Python environment",
                    context="pinning the installer's dependencies",
                    hint="run `make setup` (pip install -e .) first") from None
    pins = []
    for r in reqs:
        if "extra ==" in r:
            continue
        name = re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]
        pins.append(f"{name}=={metadata.version(name)}")
    return sorted(pins, key=str.lower)


def name_version(filename: str) -> Tuple[str, str]:
    """(normalized project name, version) of a wheel's file name: ('pyyaml', '6.0.1')."""
    parts = filename.split("-")
    return _norm(parts[0]), parts[1]


def _pip(args: Sequence[str], what: str, env: Optional[Dict[str, str]] = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise Error(f"pip failed while {what}", context=" ".join(["pip", *args])[:300], details=[tail],
                    hint="the connected host needs access to PyPI (or a pip index configured in pip.conf)")


def build_project_wheel(out: Path) -> Path:
    """Build the k8s-offline wheel from this source tree."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # a fixed SOURCE_DATE_EPOCH (whatever the caller's) makes the wheel reproducible: same sources, same
        # hash; --no-index and no version check: a build from a full cache makes no network request
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp, str(ROOT)],
             "building the installer wheel",
             env={"SOURCE_DATE_EPOCH": WHEEL_EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        built = list(Path(tmp).glob("*.whl"))
        if len(built) != 1:
            raise Error("building the installer wheel produced no single wheel", context=str(ROOT))
        dest = out / built[0].name
        shutil.copyfile(built[0], dest)
        return dest


def download_deps(pins: Iterable[str], python: str, dest: Path) -> List[Path]:
    """Download binary wheels of pins (and their dependencies) for CPython `python` on x86_64 Linux."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    # a full version: some wheels exclude x.y.0 releases (e.g. Requires-Python !=3.9.0,!=3.9.1)
    args = ["download", "-q", "--only-binary=:all:", "--implementation", "cp", "--python-version", f"{python}.99",
            "--platform", PLATFORM]
    for p in EXTRA_PLATFORMS:
        args += ["--platform", p]
    try:
        _pip([*args, "-d", str(dest), *pins], f"downloading the installer's dependencies for Python {python}")
    except Error:
        # this environment's versions may be too new for an older Python: let pip choose for it
        names = [p.split("==")[0] for p in pins]
        _pip([*args, "-d", str(dest), *names], f"downloading the installer's dependencies for Python {python}")
    return sorted(set(dest.glob("*.whl")) | before)


def requirements_for(wheels: Dict[str, List[Path]]) -> str:
    """requirements.txt text: one `name==version --hash=...` line per package, every wheel's hash."""
    lines = []
    for key in sorted(wheels):
        name, version = key.split("==")
        hashes = sorted({sha256_file(w) for w in wheels[key]})
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    return "\n".join(lines) + "\n"


def _compatible(wheel: Path, python: str) -> bool:
    """Whether a downloaded wheel is one pip would pick for this Python (pip download leaves all in dest)."""
    tag = wheel.name[: -len(".whl")].split("-")
    py, abi = tag[-3], tag[-2]
    short = "cp" + python.replace(".", "")
    tags = py.split(".")
    if abi == "abi3" or any(t in ("py3", "py2.py3") or t.startswith("py3") for t in tags):
        return True
    return short in tags


def collect(cache_dir: Path, work_dir: Path, pythons: Sequence[str] = DEFAULT_PYTHONS) -> InstallerFiles:
    """Project wheel + dependency wheels + one hash-pinned requirements file per Python version.

    Dependency downloads are cached under cache_dir keyed by the pins and Python version, so only the
    first build of a given dependency set needs PyPI; the project wheel is built into work_dir.
    """
    pins = runtime_pins()
    key = hashlib.sha256(json.dumps([pins, list(pythons), PLATFORM]).encode()).hexdigest()[:16]
    deps_dir = Path(cache_dir) / "wheels" / key
    done = deps_dir / ".complete"
    per_python: Dict[str, List[Path]] = {}
    if not done.exists():
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=deps_dir.parent if deps_dir.parent.exists()
                                    else _mk(deps_dir.parent)))
        try:
            for py in pythons:
                download_deps(pins, py, tmp / py)
            if deps_dir.exists():
                shutil.rmtree(deps_dir)
            tmp.rename(deps_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        done.write_text(json.dumps(pins))
    for py in pythons:
        per_python[py] = [w for w in sorted((deps_dir / py).glob("*.whl")) if _compatible(w, py)]
    proj_dir = Path(work_dir) / "installer-wheel"  # the caller's scratch directory: removed with it
    proj_dir.mkdir(parents=True, exist_ok=True)
    project = build_project_wheel(proj_dir)
    files: List[Tuple[str, Path]] = [(f"wheels/{project.name}", project)]
    seen = {project.name}
    for py, ws in per_python.items():
        groups: Dict[str, List[Path]] = {}
        for w in ws:
            name, version = name_version(w.name)
            groups.setdefault(f"{name}=={version}", []).append(w)
            if w.name not in seen:
                files.append((f"wheels/{w.name}", w))
                seen.add(w.name)
        pname, pversion = name_version(project.name)
        groups[f"{pname}=={pversion}"] = [project]
        req = proj_dir / f"requirements-cp{py.replace('.', '')}.txt"
        req.write_text(requirements_for(groups))
        files.append((req.name, req))
    return InstallerFiles(files=tuple(files), pythons=tuple(pythons))


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
