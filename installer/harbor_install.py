"""Harbor install mode (`registry.mode: install`): the registry host, its desired state, the generated secrets,
and the executor's Harbor steps (upload + unpack of the offline installer, install.sh, the API probe).

The registry host is not a cluster host: it has no roles, is reached at `registry.address` with `registry.ssh`
(or the inventory's ssh settings) and appears in plans, the journal and the report as `registry` (or as the
registry's hostname when a cluster host is already called `registry`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import string
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import requests

from contract.bundle import layout
from contract.digest import sha256_file
from contract.errors import Error
from installer import components, pki_material
from installer import render as render_mod
from installer.hosts.connector import Connector
from installer.inventory import Host, Inventory
from installer.plan_model import HarborDesired, HostDesired, Source

HOST_NAME = "registry"
INSTALL_DIR = render_mod.HARBOR_DIR
CONFIG = render_mod.HARBOR_CFG
MARKER = f"{INSTALL_DIR}/.k8s-offline-installer"
INSTALL_LOG = "/var/log/k8s-offline/harbor-install.log"
INSTALLER_GLOB = "harbor-offline-installer-v*.tgz"
COMPOSE = components.REGISTRY.binaries[0]
COMPOSE_FILE = COMPOSE.archive
COMPOSE_PATH = COMPOSE.path
PACKAGES = components.REGISTRY.packages
UNITS = components.REGISTRY.unit_names
SECRETS_DIR = "secrets"
ADMIN_SECRET = "harbor-admin-password"
DB_SECRET = "harbor-db-password"
PASSWORD_LENGTH = 20
UPLOAD_CHUNK = 32 * 1024 * 1024  # the real installer is ~860 MB: never in memory at once
INSTALL_TIMEOUT = 1800.0  # install.sh loads ~1.5 GB of images on a real host
LOG_LINES = 30
PROBE_TIMEOUT = 5.0
RUN_MARK = "== install.sh "  # the line install_command writes before each run


def host_name(inv: Inventory) -> str:
    """The registry host's name in plans and the journal."""
    taken = {h.name for h in inv.hosts}
    return HOST_NAME if HOST_NAME not in taken else inv.registry.hostname


def registry_host(inv: Inventory) -> Optional[Host]:
    """The registry host as a role-less Host (install mode only), for connectors, facts and the planner."""
    r = inv.registry
    if r.mode != "install":
        return None
    # model_construct: a Host must have a cluster role when it comes from the inventory; this one has none
    return Host.model_construct(name=host_name(inv), address=r.address, roles=(), ssh=r.ssh, interface=None,
                                lb_priority=None)


# ------------------------------------------------------------------ secrets on the control host


def _new_password() -> str:
    """Letters and digits only (harbor.cfg is read by ConfigParser), with each class Harbor's policy asks for."""
    alphabet = string.ascii_letters + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if any(c.islower() for c in pw) and any(c.isupper() for c in pw) and any(c.isdigit() for c in pw):
            return pw


def secret_path(state_root: Path, name: str) -> Path:
    return Path(state_root) / SECRETS_DIR / name


def ensure_secret(state_root: Path, name: str) -> str:
    """The secret in <state>/secrets/<name>: created once (0600, in a 0700 directory), then always reused."""
    path = secret_path(state_root, name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return value
    value = _new_password()
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(tmp, path)  # never replaces a password another run wrote meanwhile
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value


def admin_password(state_root: Path) -> str:
    return ensure_secret(state_root, ADMIN_SECRET)


# ------------------------------------------------------------------ desired state


def _bundle_file(bundle_dir: Path, files: Mapping[str, str], pattern: str) -> Tuple[Path, Source]:
    """A file of the bundle's binaries/ by glob, with its sha256 from the signed manifest."""
    path = layout.find_binary(bundle_dir, pattern)
    if path is None:
        raise Error(f"the bundle has no {layout.stored_binary_name(pattern)} in {layout.BINARIES_DIR}/",
                    context="preparing the Harbor install",
                    hint="registry.mode install needs a bundle built with harbor-offline-installer and "
                         "docker-compose (the default spec has both); or set registry.mode external")
    rel = f"{layout.BINARIES_DIR}/{path.name}"
    sha = files.get(rel) or sha256_file(path)
    return path, Source(sha, rel, 0o755)


def marker_content(installer: Source) -> bytes:
    return f"{installer.sha256}  {installer.origin.rsplit('/', 1)[-1]}\n".encode()


def install_command() -> str:
    """install.sh as the operator runs it, with its output kept on the host for the error report."""
    log = shlex.quote(INSTALL_LOG)
    return (f"mkdir -p {shlex.quote(os.path.dirname(INSTALL_LOG))} && cd {shlex.quote(INSTALL_DIR)} && "
            f"{{ echo \"{RUN_MARK}$(date -u +%FT%TZ)\"; ./install.sh; }} >>{log} 2>&1")


def desired(inv: Inventory, bundle_dir: Path, bundle_files: Mapping[str, str], pki, state_root: Path,
            rpm_keys: Mapping[str, render_mod.File], repo: Mapping[str, Source],
            versions: Mapping[str, str]) -> Tuple[HostDesired, Dict[str, Path]]:
    """The registry host's desired state, and {Source origin: local file} for its binaries and the installer."""
    r = inv.registry
    if r.insecure:
        raise Error("registry.mode install serves Harbor over https only", context="planning the Harbor install",
                    hint="remove registry.insecure (nodes trust the site CA for the registry)")
    if r.port != 443:
        raise Error(f"registry.mode install serves Harbor on port 443, not {r.port}",
                    context="planning the Harbor install",
                    hint="Harbor 1.4's docker-compose.yml publishes 443; set registry.port: 443")
    tgz, installer = _bundle_file(bundle_dir, bundle_files, INSTALLER_GLOB)
    installer = Source(installer.sha256, installer.origin, 0o644)
    compose, compose_src = _bundle_file(bundle_dir, bundle_files, COMPOSE_FILE)
    files = render_mod.registry_host_files(inv, versions=versions, gpgcheck=bool(rpm_keys),
                                           gpgkey=[f"file://{p}" for p in sorted(rpm_keys)],
                                           unchecked_repo=layout.has_unchecked_repo(bundle_files))
    files.update(rpm_keys)
    files.update(pki_material.registry_material(pki, inv))
    crt, key = render_mod.harbor_cert_paths(inv)
    if set(pki_material.registry_material(pki, inv)) != {crt, key}:
        raise Error("the PKI writes Harbor's certificate elsewhere than harbor.cfg points to",
                    hint="this is a bug: report it")
    files[CONFIG] = render_mod.harbor_cfg(inv, admin_password=admin_password(state_root),
                                          db_password=ensure_secret(state_root, DB_SECRET))
    harbor = HarborDesired(installer=installer, install_dir=INSTALL_DIR, marker=MARKER,
                           marker_sha256=hashlib.sha256(marker_content(installer)).hexdigest(),
                           reinstall_on=(CONFIG, crt, key), install_command=install_command(),
                           endpoint=r.endpoint)
    d = HostDesired(files=files, binaries={COMPOSE_PATH: compose_src}, repo=dict(repo), packages=PACKAGES,
                    units=UNITS, harbor=harbor)
    return d, {installer.origin: tgz, compose_src.origin: compose}


# ------------------------------------------------------------------ control-side access


def access(inv: Inventory, state_root: Path, ca_path: Path) -> Dict[str, Union[str, bool, None]]:
    """Credentials and trust for the registry: install mode uses the generated admin password and the site CA."""
    if inv.registry.mode != "install":
        return {}
    path = secret_path(state_root, ADMIN_SECRET)
    password = path.read_text().strip() if path.exists() else None
    return {"password": password, "verify": str(ca_path)}


def probe(base_url: str, session: requests.Session, verify: Union[bool, str]) -> Tuple[bool, str]:
    """Whether Harbor's /api/systeminfo answers over TLS verified with `verify` (the site CA)."""
    url = f"{base_url}/api/systeminfo"
    try:
        resp = session.get(url, verify=verify, timeout=PROBE_TIMEOUT)
    except requests.exceptions.SSLError as e:
        return False, f"TLS verification against the site CA failed: {str(e)[:200]}"
    except requests.RequestException as e:
        return False, f"{type(e).__name__}: {str(e)[:160]}"
    if resp.status_code != 200:
        return False, f"HTTP {resp.status_code} from {url}"
    try:
        version = resp.json().get("harbor_version", "?")
    except ValueError:
        return False, f"{url} did not answer JSON"
    return True, f"Harbor {version}"


# ------------------------------------------------------------------ executor steps on the registry host


def unpack(conn: Connector, local: Path, installer: Source) -> str:
    """Upload the offline installer in chunks, check its sha256 there, unpack it into INSTALL_DIR, write MARKER.

    harbor.cfg is excluded (it is rendered); everything else from an older unpack is removed first."""
    q = shlex.quote
    parent = os.path.dirname(INSTALL_DIR)
    part = f"{parent}/.{os.path.basename(INSTALL_DIR)}-installer.tgz.part"
    conn.run(f"mkdir -p {q(parent)} && rm -f {q(part)} && : > {q(part)} && chmod 0600 {q(part)}", timeout=60)
    size = 0
    with open(local, "rb") as f:
        for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
            conn.run(f"cat >> {q(part)}", input=chunk, timeout=600)
            size += len(chunk)
    top = os.path.basename(INSTALL_DIR)
    script = "\n".join([
        "set -e",
        f"echo {q(installer.sha256 + '  ' + part)} | sha256sum -c --quiet -",
        f"mkdir -p {q(INSTALL_DIR)}",
        f"find {q(INSTALL_DIR)} -mindepth 1 -maxdepth 1 ! -name harbor.cfg -exec rm -rf {{}} +",
        f"tar -xf {q(part)} -C {q(parent)} --no-same-owner --exclude={q(top + '/harbor.cfg')}",
        f"test -x {q(INSTALL_DIR + '/install.sh')}",
        f"rm -f {q(part)}",
    ])
    r = conn.run(script, timeout=1200, check=False)
    if r.rc != 0:
        conn.run(f"rm -f {q(part)}", timeout=60, check=False)
        raise Error(f"unpacking {installer.origin} into {INSTALL_DIR} failed (exit status {r.rc})",
                    context="unpacking the Harbor offline installer", details=r.stderr.strip().splitlines()[-10:],
                    hint="a sha256 mismatch means the upload was damaged: run apply again; else check the "
                         f"free space under {parent}")
    conn.put(MARKER, marker_content(installer), 0o644)  # last: a half-done unpack is redone next time
    return f"{size // (1 << 20)} MiB uploaded and unpacked"


def install(conn: Connector, command: str) -> str:
    """Run install.sh; on failure the error carries the tail of its log."""
    r = conn.run(command, timeout=INSTALL_TIMEOUT, check=False)
    if r.rc != 0:
        raise Error(f"Harbor's install.sh failed (exit status {r.rc})", context=f"installing Harbor in {INSTALL_DIR}",
                    details=log_tail(conn),
                    hint=f"the lines above are the end of {INSTALL_LOG} on the registry host; fix the cause and "
                         "run apply again")
    return "install.sh done"


def log_tail(conn: Connector, n: int = LOG_LINES) -> List[str]:
    """The last lines of the latest install.sh run in the install log on the registry host (for error reports)."""
    try:
        r = conn.run(f"tail -n {n * 10} {shlex.quote(INSTALL_LOG)}", timeout=20, check=False)
    except Error as e:
        return [f"(install log not readable: {e.message})"]
    lines = r.stdout.rstrip("\n").splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith(RUN_MARK)]
    lines = lines[starts[-1]:] if starts else lines  # earlier runs only confuse the reader
    return [f"{INSTALL_LOG}: {ln}" for ln in lines[-n:]] or [f"({INSTALL_LOG} is empty or missing)"]


__all__ = ["HOST_NAME", "INSTALL_DIR", "CONFIG", "MARKER", "INSTALL_LOG", "COMPOSE_PATH", "PACKAGES",
           "host_name", "registry_host", "ensure_secret", "admin_password", "secret_path", "desired", "access",
           "probe", "unpack", "install", "log_tail", "marker_content", "install_command"]
