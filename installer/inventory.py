"""The site inventory: hosts and roles, VIP, networks, registry; frozen and fully validated."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Tuple, Union

from pydantic import Field, field_validator

from contract.documents import Frozen, Loc, load_document
from installer import etcd_users

ROLES = ("master", "etcd", "lb", "node")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
HINT = "see inventory.example.yaml for a complete, valid inventory"


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"not an IP address: {v!r}") from None


def _cidr(v: str) -> str:
    try:
        return str(ipaddress.ip_network(v, strict=True))
    except ValueError as e:
        raise ValueError(f"not a network in CIDR form (e.g. 10.254.0.0/16): {e}") from None


def _bip(v: str) -> str:
    """docker's --bip: the bridge's own address with its prefix (192.0.2.1/24), not a network address."""
    try:
        iface = ipaddress.ip_interface(v)
    except ValueError as e:
        raise ValueError(f"not an address with a prefix (e.g. 172.17.0.1/16): {e}") from None
    if iface.version != 4 or iface.ip in (iface.network.network_address, iface.network.broadcast_address) \
            or iface.network.prefixlen > 30:
        raise ValueError(f"{v}: docker0 needs an IPv4 host address inside a /30 or larger network "
                         "(e.g. 172.17.0.1/16)")
    return str(iface)


def _hostname(v: str) -> str:
    if not HOSTNAME_RE.match(v):
        raise ValueError(f"not a valid hostname: {v!r} (lower-case letters, digits, '-' and '.')")
    return v


class Ssh(Frozen):
    """How the control host reaches a host."""

    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    key: Optional[str] = None  # private key file; default: ssh-agent / ~/.ssh
    sudo: Optional[bool] = None  # default: True when user is not root
    connect_timeout: float = Field(10.0, gt=0)

    @property
    def use_sudo(self) -> bool:
        return self.sudo if self.sudo is not None else self.user != "root"


class Host(Frozen):
    """One machine of the cluster."""

    name: str
    address: str
    roles: Tuple[Literal["master", "etcd", "lb", "node"], ...]
    ssh: Optional[Ssh] = None
    interface: Optional[str] = None  # NIC for flannel/keepalived; default cluster.interface
    lb_priority: Optional[int] = Field(None, ge=1, le=254)

    _n = field_validator("name")(classmethod(lambda cls, v: _hostname(v)))
    _a = field_validator("address")(classmethod(lambda cls, v: _ip(v)))

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: Tuple[str, ...]) -> Tuple[str, ...]:
        if not v:
            raise ValueError(f"a host needs at least one role of: {', '.join(ROLES)}")
        if len(set(v)) != len(v):
            raise ValueError("a role is listed twice")
        return v

    def has(self, role: str) -> bool:
        return role in self.roles


class Cluster(Frozen):
    """Cluster-wide settings."""

    name: str = "kubernetes"
    vip: str
    vip_prefix: int = Field(24, ge=8, le=32)
    apiserver_port: int = Field(6443, ge=1, le=65535)
    lb_port: int = Field(8443, ge=1, le=65535)
    service_cidr: str = "10.254.0.0/16"
    pod_cidr: str = "172.30.0.0/16"
    pod_subnet_len: int = Field(24, ge=16, le=28)
    cluster_dns: Optional[str] = None  # default: 10th address of the service range
    domain: str = "cluster.local"
    interface: str = "eth0"
    dns_addon: Literal["kube-dns", "coredns"] = "kube-dns"
    flannel_backend: Literal["vxlan", "host-gw", "udp"] = "vxlan"
    flannel_prefix: str = "/coreos.com/network"
    docker_data_root: str = "/var/lib/docker"
    # docker0's own address: containers docker starts itself (not pods: CNI wires those onto cni0) use it.
    # It must overlap no pod, service or host network, or a subnet would be routed two ways on a node.
    docker_bip: str = "172.17.0.1/16"
    cgroup_driver: Literal["cgroupfs", "systemd"] = "cgroupfs"
    selinux: Literal["disabled", "permissive", "keep"] = "disabled"
    firewalld: Literal["disable", "keep"] = "disable"
    cert_days: int = Field(3650, ge=1)
    renew_within_days: int = Field(30, ge=1)
    etcd_backups_keep: int = Field(5, ge=1)  # etcd snapshots kept in <state>/backups (installer.etcd_backup)

    _v = field_validator("vip")(classmethod(lambda cls, v: _ip(v)))
    _s = field_validator("service_cidr", "pod_cidr")(classmethod(lambda cls, v: _cidr(v)))
    _b = field_validator("docker_bip")(classmethod(lambda cls, v: _bip(v)))
    _d = field_validator("cluster_dns")(classmethod(lambda cls, v: v if v is None else _ip(v)))
    _h = field_validator("domain")(classmethod(lambda cls, v: _hostname(v)))

    @property
    def dns_ip(self) -> str:
        if self.cluster_dns:
            return self.cluster_dns
        return str(ipaddress.ip_network(self.service_cidr)[10])

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])


class Registry(Frozen):
    """The site registry (Harbor): installed by us on a host, or an existing one."""

    mode: Literal["install", "external"] = "install"
    hostname: str
    address: str
    port: int = Field(443, ge=1, le=65535)
    project: str = "kubernetes"
    public: bool = True
    insecure: bool = False  # plain HTTP; only when asked
    ca_file: Optional[str] = None  # external mode: CA that signed the registry certificate
    username: str = "admin"
    password_file: Optional[str] = None  # external mode; install mode generates one
    ssh: Optional[Ssh] = None
    data_dir: str = "/data"

    _h = field_validator("hostname")(classmethod(lambda cls, v: _hostname(v)))
    _a = field_validator("address")(classmethod(lambda cls, v: _ip(v)))

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$", v):
            raise ValueError(f"not a valid Harbor project name: {v!r} (lower-case, digits, '.', '_', '-')")
        return v

    @property
    def endpoint(self) -> str:
        return self.hostname if self.port in (443, 80) else f"{self.hostname}:{self.port}"


class Inventory(Frozen):
    """The whole site."""

    cluster: Cluster
    ssh: Ssh = Ssh()
    registry: Registry
    hosts: Tuple[Host, ...]

    def with_role(self, role: str) -> List[Host]:
        return [h for h in self.hosts if h.has(role)]

    @property
    def masters(self) -> List[Host]:
        return self.with_role("master")

    @property
    def etcd_members(self) -> List[Host]:
        return self.with_role("etcd")

    @property
    def lbs(self) -> List[Host]:
        return self.with_role("lb")

    @property
    def nodes(self) -> List[Host]:
        return self.with_role("node")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def ssh_for(self, host: Host) -> Ssh:
        return host.ssh or self.ssh

    def iface(self, host: Host) -> str:
        return host.interface or self.cluster.interface


Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
TWO_WAYS = "otherwise a node routes that range two ways"


def host_network(c: Cluster) -> Network:
    """The hosts' own network: the VIP's, cluster.vip/vip_prefix (keepalived's L2 network)."""
    return ipaddress.ip_network(f"{c.vip}/{c.vip_prefix}", strict=False)


def cluster_networks(c: Cluster) -> List[Tuple[Loc, str, Network, Optional[str]]]:
    """Every range a node routes, as (YAML path, label, network, hint for when it overlaps one listed before
    it): the hosts' network first, then the cluster's own ranges; none may overlap another."""
    bip = ipaddress.ip_interface(c.docker_bip).network
    return [
        (("cluster", "vip_prefix"), "the hosts' network (vip/vip_prefix)", host_network(c), None),
        (("cluster", "service_cidr"), "cluster.service_cidr", ipaddress.ip_network(c.service_cidr),
         f"choose a service range outside the hosts' network: {TWO_WAYS}"),
        (("cluster", "pod_cidr"), "cluster.pod_cidr", ipaddress.ip_network(c.pod_cidr),
         f"choose a pod range disjoint from the service range and the hosts' network: {TWO_WAYS}"),
        (("cluster", "docker_bip"), "docker0's network (cluster.docker_bip)", bip,
         "give docker0 a range of its own that no pod, service or host uses (docker's default is "
         f"172.17.0.1/16): {TWO_WAYS}"),
    ]


def network_overlaps(inv: Inventory) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    """Any two of the hosts', service, pod and docker0 networks overlapping, and any host, registry or VIP
    address inside a cluster range; each reported at the later range's key (pairs are checked once)."""
    nets = cluster_networks(inv.cluster)
    for j, (loc, label, net, hint) in enumerate(nets):
        for _loc, other_label, other, _hint in nets[:j]:
            if net.overlaps(other):
                yield loc, f"{label} {net} overlaps {other_label} {other}", hint
    addresses: List[Tuple[Loc, str, str]] = [(("cluster", "vip"), f"VIP {inv.cluster.vip}", inv.cluster.vip)]
    addresses += [(("hosts", i, "address"), h.address, h.address) for i, h in enumerate(inv.hosts)]
    addresses.append((("registry", "address"), inv.registry.address, inv.registry.address))
    for loc, label, address in addresses:
        ip = ipaddress.ip_address(address)
        for _loc, net_label, net, _hint in nets[1:]:
            if ip in net:
                yield loc, f"{label} lies inside {net_label} {net}", \
                    "hosts, the registry and the VIP need addresses outside the service, pod and docker0 ranges"


def cross_checks(inv: Inventory) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    """Problems that involve more than one field: duplicates, roles, address plans."""
    c = inv.cluster
    seen_names: dict = {}
    seen_addrs: dict = {}
    for i, h in enumerate(inv.hosts):
        if h.name in seen_names:
            yield ("hosts", i, "name"), f"duplicate host name {h.name!r} (also hosts[{seen_names[h.name]}])", \
                "every host needs its own name"
        seen_names.setdefault(h.name, i)
        if h.address in seen_addrs:
            yield ("hosts", i, "address"), \
                f"duplicate address {h.address} (also hosts[{seen_addrs[h.address]}])", \
                "every host needs its own IP address"
        seen_addrs.setdefault(h.address, i)
        if h.address == c.vip:
            yield ("hosts", i, "address"), f"address {h.address} is the VIP", \
                "the VIP must be a free address that keepalived moves between the lb hosts"
        if h.has("etcd") and h.name in etcd_users.RESERVED_HOST_NAMES:
            yield ("hosts", i, "name"), f"etcd host name {h.name!r} is the name of an etcd user", \
                f"rename the host: {', '.join(sorted(etcd_users.RESERVED_HOST_NAMES))} are etcd's users, and a " \
                "member's certificate carries its host's name"
    for role in ("master", "etcd", "node"):
        if not inv.with_role(role):
            yield ("hosts",), f"no host has the role {role!r}", f"give at least one host the role {role!r}"
    n_etcd = len(inv.etcd_members)
    if n_etcd and n_etcd % 2 == 0:
        yield ("hosts",), f"{n_etcd} etcd members: an even number gains no fault tolerance", \
            "use 1, 3 or 5 etcd members"
    if inv.masters and not inv.lbs:
        yield ("hosts",), "no host has the role 'lb' (haproxy + keepalived for the VIP)", \
            "give the masters the role 'lb' as well, as the seeds do"
    yield from network_overlaps(inv)
    svc = ipaddress.ip_network(c.service_cidr)
    if c.cluster_dns and ipaddress.ip_address(c.cluster_dns) not in svc:
        yield ("cluster", "cluster_dns"), f"{c.cluster_dns} is not inside cluster.service_cidr {svc}", \
            "the DNS service address must come from the service range"
    lb_net = host_network(c)
    for i, h in enumerate(inv.hosts):
        if h.has("lb") and ipaddress.ip_address(h.address) not in lb_net:
            yield ("hosts", i, "address"), f"lb host {h.address} is not in the VIP's network {lb_net}", \
                "keepalived can only move the VIP between hosts of the same L2 network"
    if ipaddress.ip_network(c.pod_cidr).prefixlen >= c.pod_subnet_len:
        yield ("cluster", "pod_subnet_len"), f"/{c.pod_subnet_len} subnets do not fit in {c.pod_cidr}", \
            "use a pod range larger than one node subnet"
    if inv.registry.address == c.vip:
        yield ("registry", "address"), "the registry address is the VIP", "give the registry its own address"
    if inv.registry.mode == "external" and inv.registry.password_file is None and not inv.registry.public:
        yield ("registry", "password_file"), "an external private registry needs credentials", \
            "set registry.password_file to a file holding the password"
    ports = {c.apiserver_port, c.lb_port}
    if len(ports) == 1 and any(h.has("lb") and h.has("master") for h in inv.hosts):
        yield ("cluster", "lb_port"), "lb_port equals apiserver_port on hosts that are both lb and master", \
            "use another port for haproxy (the seeds use 8443)"


def key_path(key: str) -> Path:
    """The file an ssh.key names: `~` expanded; a relative path is taken from the current directory (as
    `ssh -i` takes it, and as registry.ca_file and registry.password_file are read)."""
    return Path(key).expanduser()


def _unreadable(path: Path) -> Optional[str]:
    """Why path is not a readable regular file, or None when it is."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    return None


def local_file_checks(inv: Inventory) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    """Files on this control host the inventory names and every SSH connection needs: the ssh keys."""
    settings: List[Tuple[Loc, Optional[Ssh]]] = [(("ssh",), inv.ssh), (("registry", "ssh"), inv.registry.ssh)]
    settings += [(("hosts", i, "ssh"), h.ssh) for i, h in enumerate(inv.hosts)]
    for loc, s in settings:
        problem = _unreadable(key_path(s.key)) if s is not None and s.key is not None else None
        if problem:
            yield loc + ("key",), problem, \
                "name the private key file on this control host (`~` is expanded, a relative path is taken " \
                "from the current directory), or remove the key to use ssh-agent and ~/.ssh"


def _all_checks(inv: Inventory) -> Iterator[Tuple[Loc, str, Optional[str]]]:
    yield from cross_checks(inv)
    yield from local_file_checks(inv)


def load(path: Path) -> Inventory:
    """Load and validate an inventory file, including the local files it names (ssh keys)."""
    return load_document(Path(path), Inventory, "inventory", HINT, _all_checks)
