"""Pure rendering: (inventory, host, PKI files, images, versions) -> {remote path: File} for that host.

Which files a host gets follows its roles: the templates of the components it runs (installer/components.py;
a master that is not a node gets no kubelet, kube-proxy or docker configuration). Templates live in
installer/templates/, one per file on the host, rendered with StrictUndefined so a missing variable is an
error, never an empty string.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import jinja2

from installer import components
from installer.components import BIN_DIR, CNI_BIN_DIR, CNI_CONF_DIR, HARBOR_DIR, PATHS, UNIT_DIR  # noqa: F401
from installer.inventory import Host, Inventory

DEFAULT_REPO_URL = "file:///var/lib/k8s-offline/repo"
MARKER = ".rendered-by-k8s-offline"

DEFAULT_UPSTREAM_IMAGES = {"pause": "k8s.gcr.io/pause-amd64:3.1"}
DEFAULT_VERSIONS = {v.name: v.default for v in components.VERSIONS}
ADMISSION_PLUGINS = (  # kubeadm 1.10's set; listed explicitly because 1.10's implicit default is unclear
    "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "DefaultStorageClass", "DefaultTolerationSeconds",
    "NodeRestriction", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook", "ResourceQuota",
    # CIS 1.2.0 items 1.1.11-13 and 1.1.35 (README: "CIS Kubernetes Benchmark"); every image is in the site
    # registry, so AlwaysPullImages costs a registry round trip per container start, not an outage
    "AlwaysPullImages", "DenyEscalatingExec", "SecurityContextDeny", "EventRateLimit",
)
ENCRYPTION_KEY_NAME = "k8s-offline-1"  # the aescbc key's name in the EncryptionConfig


@dataclass(frozen=True)
class File:
    """Desired content of one file on a host."""

    content: bytes = field(repr=False)  # may be a private key: never in a repr, a log or an assertion message
    mode: int = 0o644
    owner: str = "root"


def _envargs(flags: Iterable[str]) -> str:
    """Flags as the body of a double-quoted EnvironmentFile value, one per line (backslash-continued)."""
    return " \\\n".join(flags)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["envargs"] = _envargs
    env.filters["json"] = json.dumps
    return env


_ENV = _env()


def parse_env_file(text: str) -> Dict[str, str]:
    """Variables of an EnvironmentFile as systemd reads the ones we render (quotes, backslash-newline)."""
    out: Dict[str, str] = {}
    for line in text.replace("\\\n", "").splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out


def registry_ca_path(inv: Inventory) -> str:
    """Where docker looks for the CA of the site registry."""
    return f"/etc/docker/certs.d/{inv.registry.endpoint}/ca.crt"


def default_images(inv: Inventory, upstream: Mapping[str, str] = DEFAULT_UPSTREAM_IMAGES) -> Dict[str, str]:
    """Role -> reference in the site registry: <endpoint>/<project>/<last component of the upstream ref>."""
    r = inv.registry
    return {role: f"{r.endpoint}/{r.project}/{ref.rsplit('/', 1)[-1]}" for role, ref in upstream.items()}


def flannel_network_config(inv: Inventory) -> str:
    """The JSON flannel reads from <flannel_prefix>/config (etcd v2 API); the installer writes it once."""
    c = inv.cluster
    return json.dumps({"Network": c.pod_cidr, "SubnetLen": c.pod_subnet_len, "Backend": {"Type": c.flannel_backend}},
                      sort_keys=True)


def binaries_for(host: Host) -> List[str]:
    """Remote paths of the binaries a host needs by its roles (kube-*, etcd, flanneld, CNI plugins)."""
    out: List[str] = []
    for c in components.for_host(host):
        out += [b.path for b in c.binaries if b.path not in out]
    return out


def _version_tuple(v: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in v.split("-")[0].split(".") if p.isdigit())


def _vrrp(inv: Inventory, host: Host) -> dict:
    """keepalived settings: priorities by lb order (or lb_priority), router id and password from the VIP."""
    lbs = inv.lbs
    prios = {h.name: h.lb_priority if h.lb_priority is not None else 100 - i for i, h in enumerate(lbs)}
    prio = prios[host.name]
    # the first host of the highest priority starts as MASTER and holds the VIP at once (a BACKUP waits three
    # advert intervals for a master first); the others start as BACKUP and preemption keeps the order after
    top = max(prios, key=lambda n: (prios[n], -[h.name for h in lbs].index(n)))
    # distinct VIPs on one L2 segment get distinct router ids without a setting
    router_id = int(ipaddress.ip_address(inv.cluster.vip)) % 255 + 1
    # VRRP "PASS" travels in clear text: it only keeps two clusters apart, it protects nothing
    auth = hashlib.sha256(f"{inv.cluster.name}/{inv.cluster.vip}".encode()).hexdigest()[:8]
    return {"priority": prio, "router_id": router_id, "auth_pass": auth, "state": "MASTER" if host.name == top else "BACKUP",
            "peers": [h.address for h in lbs if h.name != host.name]}


def context(inv: Inventory, host: Host, *, images: Mapping[str, str], versions: Mapping[str, str],
            repo_url: str, gpgcheck: bool, gpgkey, etcd_state: str, unchecked_repo: bool = False) -> dict:
    """Every variable the templates may use."""
    c = inv.cluster
    etcd = inv.etcd_members
    return {
        "inv": inv, "c": c, "host": host, "iface": inv.iface(host), "paths": PATHS, "bin": BIN_DIR,
        "cni_bin_dir": CNI_BIN_DIR, "cni_conf_dir": CNI_CONF_DIR, "images": images, "versions": versions,
        "repo_url": repo_url, "gpgcheck": gpgcheck, "unchecked_repo": unchecked_repo,
        # one key URL or several (one per signing key the bundle ships)
        "gpgkey": [gpgkey] if isinstance(gpgkey, str) else list(gpgkey or ()),
        "masters": inv.masters, "lbs": inv.lbs, "etcd_members": etcd,
        "etcd_servers": ",".join(f"https://{m.address}:2379" for m in etcd),
        "etcd_initial_cluster": ",".join(f"{m.name}=https://{m.address}:2380" for m in etcd),
        "etcd_state": etcd_state,
        "admission_plugins": ",".join(ADMISSION_PLUGINS),
        "registry": inv.registry,
        "haproxy_master_worker": _version_tuple(versions.get("haproxy", "1.5")) >= (1, 8),
        "vrrp": _vrrp(inv, host) if host.has("lb") else None,
    }


def render_host(
    inventory: Inventory,
    host: Union[Host, str],
    *,
    pki_files: Mapping[str, File],
    images: Optional[Mapping[str, str]] = None,
    versions: Optional[Mapping[str, str]] = None,
    repo_url: str = DEFAULT_REPO_URL,
    gpgcheck: bool = False,
    gpgkey: Union[str, Sequence[str], None] = None,
    etcd_joining: Iterable[str] = (),
    unchecked_repo: bool = False,
) -> Dict[str, File]:
    """Every file the host needs, keyed by absolute remote path; pki_files are merged in as given.

    etcd_joining names etcd members that join an existing cluster (ETCD_INITIAL_CLUSTER_STATE=existing).
    unchecked_repo: the bundle has a second yum repository (UNCHECKED_REPO) for the RPMs of spec repos with
    gpgcheck off, so that the main one keeps gpgcheck=1.
    """
    h = inventory.host(host) if isinstance(host, str) else host
    imgs = dict(default_images(inventory))
    imgs.update(images or {})
    vers = dict(DEFAULT_VERSIONS)
    vers.update(versions or {})
    ctx = context(inventory, h, images=imgs, versions=vers, repo_url=repo_url, gpgcheck=gpgcheck, gpgkey=gpgkey,
                  etcd_state="existing" if h.name in set(etcd_joining) else "new", unchecked_repo=unchecked_repo)
    out: Dict[str, File] = {}
    for path, template in (t for c in components.for_host(h) for t in c.templates):
        out[path] = File(_ENV.get_template(template).render(ctx).encode(), 0o644)
    for path, f in pki_files.items():
        if path in out:
            raise ValueError(f"PKI file {path} collides with a rendered file")
        out[path] = f
    return dict(sorted(out.items()))


def render_all(
    inventory: Inventory,
    *,
    pki_files: Mapping[str, Mapping[str, File]],
    images: Optional[Mapping[str, str]] = None,
    versions: Optional[Mapping[str, str]] = None,
    repo_url: str = DEFAULT_REPO_URL,
    gpgcheck: bool = False,
    gpgkey: Union[str, Sequence[str], None] = None,
    etcd_joining: Iterable[str] = (),
    unchecked_repo: bool = False,
) -> Dict[str, Dict[str, File]]:
    """render_host for every host: {host name: {remote path: File}}; pki_files is keyed by host name."""
    joining = tuple(etcd_joining)
    return {
        h.name: render_host(inventory, h, pki_files=pki_files.get(h.name, {}), images=images, versions=versions,
                            repo_url=repo_url, gpgcheck=gpgcheck, gpgkey=gpgkey, etcd_joining=joining,
                            unchecked_repo=unchecked_repo)
        for h in inventory.hosts
    }


HARBOR_CFG, HARBOR_TEMPLATE = components.REGISTRY.templates[0]


def harbor_cert_paths(inv: Inventory) -> Tuple[str, str]:
    """(certificate, key) paths of Harbor's site-CA-issued serving certificate on the registry host."""
    base = f"{inv.registry.data_dir.rstrip('/')}/cert"
    return f"{base}/server.crt", f"{base}/server.key"


def harbor_cfg(inv: Inventory, *, admin_password: str, db_password: str) -> File:
    """Harbor 1.4's harbor.cfg for install mode: https with the site CA's certificate, generated passwords.

    0600: it holds the admin and database passwords (Harbor's own default is 0644)."""
    for name, value in (("admin_password", admin_password), ("db_password", db_password)):
        # prepare reads harbor.cfg with ConfigParser: '%' interpolates, '#'/';' start comments, space is trimmed
        if not value or not value.isalnum():
            raise ValueError(f"{name} must be a non-empty alphanumeric string")
    crt, key = harbor_cert_paths(inv)
    text = _ENV.get_template(HARBOR_TEMPLATE).render(registry=inv.registry, ssl_cert=crt, ssl_cert_key=key,
                                                    admin_password=admin_password, db_password=db_password)
    return File(text.encode(), 0o600)


def encryption_config(secret_b64: str) -> File:
    """The EncryptionConfig (kind/apiVersion as 1.10 reads them) with the site's aescbc key; 0600 root.

    secret_b64: base64 of the 32-byte key (pki.Pki.encryption_key). Every master gets the same file."""
    text = _ENV.get_template("encryption-config.yaml.j2").render(key_name=ENCRYPTION_KEY_NAME, secret=secret_b64)
    return File(text.encode(), 0o600)


def registry_host_files(inv: Inventory, *, versions: Optional[Mapping[str, str]] = None,
                        repo_url: str = DEFAULT_REPO_URL, gpgcheck: bool = False,
                        gpgkey: Union[str, Sequence[str], None] = None,
                        unchecked_repo: bool = False) -> Dict[str, File]:
    """Rendered files of the registry host (install mode) besides harbor.cfg: the offline yum repository."""
    vers = dict(DEFAULT_VERSIONS)
    vers.update(versions or {})
    ctx = {"versions": vers, "repo_url": repo_url, "gpgcheck": gpgcheck, "unchecked_repo": unchecked_repo,
           "gpgkey": [gpgkey] if isinstance(gpgkey, str) else list(gpgkey or ())}
    return {path: File(_ENV.get_template(template).render(ctx).encode()) for path, template in components.REPO.templates}


def write_tree(rendered: Mapping[str, Mapping[str, File]], out_dir: Path) -> int:
    """Write DIR/<host>/<remote path> with each file's mode; returns the number of files written.

    A host's directory from an earlier run is replaced, but only when out_dir carries our marker file,
    so pointing --out at a directory of one's own never deletes anything.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    ours = marker.exists() or not any(out.iterdir())
    marker.write_text("written by `installer render`; host directories here are replaced on every run\n")
    n = 0
    for host, files in rendered.items():
        hdir = out / host
        if ours and hdir.is_dir():
            shutil.rmtree(hdir)
        for path, f in files.items():
            dest = hdir / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, f.mode)  # before the first byte: a key is never readable by others, not even briefly
            with os.fdopen(fd, "wb") as fh:
                fh.write(f.content)
            n += 1
    return n


def render_to_dir(inventory_path: Path, state_dir: Path, out_dir: Path, *, bundle: Optional[Path] = None,
                  pub: Optional[Path] = None, out=None, repo_url: str = DEFAULT_REPO_URL,
                  images: Optional[Mapping[str, str]] = None, versions: Optional[Mapping[str, str]] = None,
                  clock=None) -> dict:
    """`installer render`: load the inventory, ensure the PKI, render every host, write the tree.

    With a bundle (and its public key), the files are exactly those apply writes (the desired state's files:
    repo file with gpgcheck=1 and the bundle's keys, image names, addons, the registry host); the bundle is
    verified and unpacked in a scratch copy of the state directory, of which only the PKI is written, as
    without one. Without a bundle, `previews` names the files that depend on it (rendered with defaults)."""
    from installer import inventory as inventory_mod
    from installer import pki as pki_mod
    from installer import pki_material

    inv = inventory_mod.load(Path(inventory_path))
    p = pki_mod.Pki(Path(state_dir), clock=clock or pki_mod.utcnow)
    report = p.ensure(inv)
    if bundle is None:
        material = {h.name: pki_material.material_for(p, inv, h) for h in inv.hosts}
        rendered = render_all(inv, pki_files=material, images=images, versions=versions, repo_url=repo_url)
        previews = _bundle_dependent(inv, material, rendered, repo_url)
        not_copied: Dict[str, dict] = {}
    else:
        rendered, not_copied, previews = _desired_files(inventory_path, bundle, pub, state_dir, out)
    n = write_tree(rendered, Path(out_dir))
    return {
        "out_dir": str(out_dir),
        "bundle": str(bundle) if bundle is not None else None,
        "files": n,
        "hosts": {h: len(f) for h, f in rendered.items()},
        "previews": previews,
        "not_written": not_copied,
        "pki": report.lines(),
        "issued": report.issued,
    }


WITHOUT_BUNDLE = ("the rpm signing keys (/etc/pki/rpm-gpg/), the addon manifests of the first master, the registry "
                  "host (install mode), the executables and the yum repository")


def _bundle_dependent(inv: Inventory, material, rendered, repo_url: str) -> Dict[str, List[str]]:
    """{host: paths} of the files whose content depends on the bundle: those that change when every input
    taken from the bundle (image references, versions, rpm keys, second repository) changes."""
    other = {role: ref + "-other" for role, ref in default_images(inv).items()}
    alt = render_all(inv, pki_files=material, images=other, versions={k: v + ".9" for k, v in DEFAULT_VERSIONS.items()},
                     repo_url=repo_url, gpgcheck=True, gpgkey=["file:///etc/pki/rpm-gpg/other"], unchecked_repo=True)
    out = {h: sorted(p for p, f in files.items() if alt[h].get(p) != f) for h, files in rendered.items()}
    return {h: paths for h, paths in out.items() if paths}


def _desired_files(inventory_path: Path, bundle: Path, pub: Optional[Path], state_dir: Path, out):
    """(files by host as apply writes them, what apply also puts there but render does not copy, previews)."""
    from installer import dryrun, harbor_install
    from installer import site as site_mod

    with dryrun.scratch(Path(state_dir)) as scratch:  # the unpacked bundle and executables stay in the scratch
        site = site_mod.load_site(inventory_path, bundle, pub, scratch.root, out or (lambda line: None))
        rendered = {h: dict(d.files) for h, d in sorted(site.desired.items())}
        not_copied = {h: {"binaries": {p: s.sha256 for p, s in sorted(d.binaries.items())},
                          "repo_files": len(d.repo), "packages": list(d.packages)}
                      for h, d in sorted(site.desired.items())}
        made = [n for n in (harbor_install.ADMIN_SECRET, harbor_install.DB_SECRET)
                if (scratch.root / harbor_install.SECRETS_DIR / n).exists()
                and not harbor_install.secret_path(scratch.real, n).exists()]
    previews = {}
    if made and site.registry_host is not None:  # passwords apply generates anew: the preview's are not those
        previews[site.registry_host.name] = [harbor_install.CONFIG]
    return rendered, not_copied, previews
