"""The installer as one static executable in the bundle: built by static/build.sh, cached by source digest.

The datacenter's control host is CentOS 7 (Python 3.6 or none), so the bundle also carries
`installer/installer-linux-amd64`, covered by the signed manifest like every other member, and the
bundler writes `<name>-<version>.bootstrap.tar` beside the bundle for hosts without zstd: the bundle's
exact manifest.json, manifest.sig and (when it has one) manifest.sig.p256, the executable and
static/bootstrap.sh (see static/README.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

from bundler import cache
from contract.bundle import Entry, layout, tarstream
from contract.digest import sha256_file
from contract.errors import Error

ROOT = Path(__file__).resolve().parents[1]
STATIC_DIR = ROOT / "static"
BUILD_SCRIPT = STATIC_DIR / "build.sh"
BOOTSTRAP_SCRIPT = STATIC_DIR / "bootstrap.sh"
REQUIREMENTS = STATIC_DIR / "requirements-build.txt"
EXECUTABLE = "installer-linux-amd64"
BUNDLE_PATH = layout.installer_path(EXECUTABLE)  # installer/installer-linux-amd64
BOOTSTRAP_SUFFIX = ".bootstrap.tar"
DEFAULT_PYTHON = "/usr/bin/python3"
# Executables the build needs, with the apt package that provides each.
TOOLS = {"objdump": "binutils", "gcc": "gcc", "ldd": "libc-bin", "sha256sum": "coreutils", "tar": "tar"}
# Static libraries the launcher (static/launcher.c) is linked with, with the apt package of each.
STATIC_LIBS = {"libc.a": "libc6-dev", "libcrypto.a": "libssl-dev", "libz.a": "zlib1g-dev"}
_CACHE_DIR = "static"
_WORK_DIR = "work"  # <cache>/static/work: build.sh's venvs and scratch (STATIC_WORK)
_MTIME = 315532800  # 1980-01-01: bootstrap.tar is the same bytes for the same inputs

PathLike = Union[str, os.PathLike]


def build_python() -> Path:
    """The Python the executable is built with: $STATIC_PYTHON or Debian's /usr/bin/python3."""
    return Path(os.environ.get("STATIC_PYTHON", DEFAULT_PYTHON))


def _source_files(root: Path) -> list[str]:
    """Relative paths of every file the executable is built from, in byte order (as `LC_ALL=C sort`)."""
    found = []
    for top in ("contract", "installer", "static"):
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in filenames:
                p = Path(dirpath) / f
                if not f.endswith(".pyc") and p.is_file() and not p.is_symlink():
                    found.append(p.relative_to(root).as_posix())
    found.append("pyproject.toml")
    return sorted(found, key=lambda s: s.encode())


def sources_digest(root: PathLike = ROOT, python: Optional[PathLike] = None) -> str:
    """The cache key: sha256 over contract/, installer/, static/ (incl. the pinned requirements), pyproject.toml and the
    build Python's version, computed exactly as `static/build.sh --sources-digest` does."""
    root = Path(root)
    lines = "".join(f"{sha256_file(root / rel)}  {rel}\n" for rel in _source_files(root))
    version = subprocess.run([str(python or build_python()), "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return hashlib.sha256(f"{lines}python {version}\n".encode()).hexdigest()


def unavailable() -> Optional[str]:
    """Why a static executable cannot be built on this machine, or None when it can."""
    python = build_python()
    if not os.access(python, os.X_OK):
        return f"{python} is not available (the static build needs Debian's python3; apt python3)"
    code = ("import ensurepip, sys, sysconfig, os; v = '%d.%d' % sys.version_info[:2]; "
            "lib = os.path.join(sysconfig.get_config_var('LIBDIR'), 'libpython%s.so.1.0' % v); "
            "print(v if os.path.exists(lib) else 'nolib ' + v)")
    probe = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} cannot make venvs (apt python3-venv)"
    if probe.stdout.startswith("nolib"):
        return f"libpython{probe.stdout.split()[1]}.so.1.0 is missing (apt libpython{probe.stdout.split()[1]})"
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt {package})"
    for lib, package in STATIC_LIBS.items():
        # gcc prints the bare name back when it has no such file
        found = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=False)
        if found.stdout.strip() == lib:
            return f"{lib} is not installed (apt {package})"
    return None


def build(out: PathLike, log: Optional[Callable[[str], None]] = None, work: Optional[PathLike] = None) -> Path:
    """Run static/build.sh (what `make static` runs) to write the executable to `out`; `work` is its private
    directory for the build venv and scratch (STATIC_WORK; build.sh refuses one others can write)."""
    out = Path(out)
    reason = unavailable()
    if reason:
        raise Error(f"cannot build the static installer: {reason}", context="building installer-linux-amd64",
                    hint="run `make static` once as root: it installs the missing apt packages")
    if log:
        log(f"static: building {out.name} (PyInstaller onedir + static launcher, about a minute)")
    env = dict(os.environ, STATIC_WORK=str(work)) if work is not None else None
    proc = subprocess.run(["sh", str(BUILD_SCRIPT), str(out)], check=False, cwd=ROOT, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0 or not out.is_file():
        tail = proc.stderr.strip().splitlines()[-15:]
        raise Error("static/build.sh failed", context="building installer-linux-amd64", details=tail,
                    hint="run `make static` to see the whole build log")
    return out


def ensure_static(cache_root: PathLike, log: Optional[Callable[[str], None]] = None) -> Path:
    """The static executable for the current sources: from the cache, or built once and cached."""
    key = sources_digest()
    # private before anything in it is trusted: a cached executable is signed into the bundle as it is
    base = cache.private_dir(Path(cache_root) / _CACHE_DIR, "the static installer cache")
    final = base / key / EXECUTABLE
    if final.is_file():
        return final
    with open(base / f".lock-{key[:16]}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same sources: wait and reuse its result
        if final.is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=base))
        try:
            build(tmp / EXECUTABLE, log, work=cache.private_dir(base / _WORK_DIR, "the static build directory"))
            shutil.rmtree(final.parent, ignore_errors=True)
            os.rename(tmp, final.parent)  # published whole: a half-written executable is never used
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def entry(executable: PathLike) -> Entry:
    """The bundle entry installer/installer-linux-amd64 (mode 0755) for a built executable."""
    path = Path(executable)
    return Entry(BUNDLE_PATH, path, path.stat().st_size, sha256_file(path), 0o755)


def bootstrap_filename(bundle_filename: str) -> str:
    """'<name>-<version>.bootstrap.tar' for '<name>-<version>.bundle.tar.zst', one of its parts or its index."""
    parsed = layout.parse_part_filename(bundle_filename)
    name = parsed[0] if parsed else (layout.bundle_of_index(bundle_filename) or bundle_filename)
    return name.removesuffix(layout.BUNDLE_SUFFIX) + BOOTSTRAP_SUFFIX


def write_bootstrap_tar(bundle: PathLike, executable: PathLike, out_dir: Optional[PathLike] = None) -> Path:
    """Write <name>-<version>.bootstrap.tar beside the bundle: its manifest.json, manifest.sig and
    manifest.sig.p256 (if any) as they are, the executable and bootstrap.sh, uncompressed, so a host without
    zstd can bootstrap from it."""
    from contract.bundle import read_signed_head

    bundle = Path(bundle)
    manifest, head, _ = read_signed_head(bundle)
    entry_ = manifest.by_path().get(BUNDLE_PATH)
    exe = Path(executable)
    if entry_ is None:
        raise Error(f"{bundle} has no {BUNDLE_PATH}", context="writing the bootstrap tar",
                    hint="add bundler.static.entry(...) to the bundle's entries")
    if entry_.sha256 != sha256_file(exe):
        raise Error(f"{exe} is not the {BUNDLE_PATH} the bundle's manifest lists",
                    context="writing the bootstrap tar", hint="pass the executable the bundle was built with")
    first = bundle if bundle.is_file() else min(p for p in bundle.iterdir() if layout.parse_part_filename(p.name))
    out = Path(out_dir) if out_dir is not None else (bundle.parent if bundle.is_file() else bundle)
    dest = out / bootstrap_filename(first.name)
    members = [(layout.MANIFEST, None, head.manifest_bytes, 0o644), (layout.SIGNATURE, None, head.sig, 0o644)]
    if head.sig_p256 is not None:
        members.append((layout.SIGNATURE_P256, None, head.sig_p256, 0o644))
    members += [(BUNDLE_PATH, exe, None, 0o755), ("bootstrap.sh", BOOTSTRAP_SCRIPT, None, 0o755)]
    tmp = dest.with_name(f".{dest.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for name, path, data, mode in members:
                size = len(data) if data is not None else path.stat().st_size
                f.write(tarstream.file_header(name, size, mode, _MTIME))
                if data is not None:
                    f.write(data)
                else:
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, f, tarstream.CHUNK)
                f.write(tarstream.padding(size))
            f.write(tarstream.END_OF_ARCHIVE)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def sbom_item(executable: PathLike, version: str, sha256: Optional[str] = None):
    """The SBOM entry of the static executable (kind 'installer'); pass sha256 when already known."""
    from bundler import sbom, suppliers

    # built here, not downloaded: no download location
    return sbom.Item("installer", "k8s-offline-installer-static", version, sha256 or sha256_file(Path(executable)),
                     "", f"pkg:generic/k8s-offline-installer-static@{version}", supplier=suppliers.PROJECT,
                     comment="the installer CLI frozen with PyInstaller (onedir) and Debian's glibc behind a statically "
                     "linked launcher that unpacks it once into a private cache",
                     extra={"file": BUNDLE_PATH})
