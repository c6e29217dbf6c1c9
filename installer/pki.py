"""The site CA and every certificate of the cluster, kept in the control host's state directory.

The CA is created once and never regenerated. A re-run keeps every certificate whose names still match
the inventory and that does not expire within `cluster.renew_within_days`; it reissues only the others.

Key type: RSA 2048 for the CA and every leaf. CentOS 7's openssl 1.0.2 and Go 1.9/1.10 accept ECDSA
P-256 as well, but RSA is what kubeadm 1.10 uses, what kube-controller-manager's CSR signer (cfssl) and
every 2018-era client (docker 18.09 certs.d, Harbor 1.4's nginx, Java tools) are known to handle, and the
service-account key must be RSA anyway; one key type keeps the whole tree uniform.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from installer import etcd_users, kubeconfig
from installer.errors import Error
from installer.inventory import Host, Inventory
from installer.render import PATHS, File, encryption_config, registry_ca_path

Clock = Callable[[], dt.datetime]
CA_DAYS = 3650
KEY_BITS = 2048
CLOCK_SKEW = dt.timedelta(hours=1)  # hosts' clocks may lag the control host's a little
ENCRYPTION_KEY = "encryption.key"  # <state>/pki: base64 of the 32-byte aescbc key of the secrets, 0600
ENCRYPTION_KEY_BYTES = 32
SITE_CA, ETCD_CA = "ca", "etcd-ca"  # file stems of the two CAs in <state>/pki
HINT_CA = "restore ca.key from your backup of the state directory; a new CA would invalidate every certificate"


def utcnow() -> dt.datetime:
    """The real clock (timezone-aware UTC)."""
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class CertSpec:
    """What one certificate must say: subject, SANs and usages."""

    name: str  # file stem in <state>/pki
    cn: str
    orgs: Tuple[str, ...] = ()
    dns: FrozenSet[str] = frozenset()
    ips: FrozenSet[str] = frozenset()
    server: bool = False
    client: bool = False
    ca: str = SITE_CA  # the CA that signs it: SITE_CA, or ETCD_CA for etcd's servers, peers and clients

    @property
    def usages(self) -> FrozenSet[str]:
        return frozenset(u for u, on in (("serverAuth", self.server), ("clientAuth", self.client)) if on)


@dataclass(frozen=True)
class IssueEntry:
    """One line of an IssueReport."""

    name: str
    action: str  # issued | kept
    reason: str


@dataclass
class IssueReport:
    """What Pki.ensure did to each certificate, and why."""

    entries: List[IssueEntry] = field(default_factory=list)
    ca_created: bool = False

    @property
    def issued(self) -> List[str]:
        return [e.name for e in self.entries if e.action == "issued"]

    @property
    def kept(self) -> List[str]:
        return [e.name for e in self.entries if e.action == "kept"]

    def lines(self) -> List[str]:
        head = ["ca: created"] if self.ca_created else ["ca: kept"]
        return head + [f"{e.name}: {e.action} ({e.reason})" for e in self.entries]


@dataclass(frozen=True)
class CertStatus:
    """One certificate as `check` sees it."""

    name: str
    subject: str
    sans: Tuple[str, ...]
    issuer: str
    not_after: Optional[dt.datetime]
    days_left: Optional[int]
    status: str  # ok | expiring | mismatch | missing
    reason: str = ""


# ---------------------------------------------------------------- what the inventory asks for

def etcd_name(h: Host) -> str:
    return f"etcd-{h.name}"


def kubelet_name(h: Host) -> str:
    return f"kubelet-{h.name}"


def kubelet_server_name(h: Host) -> str:
    return f"kubelet-server-{h.name}"


def specs(inv: Inventory, etcd_ca: str = ETCD_CA) -> List[CertSpec]:
    """Every certificate the inventory needs, in a stable order.

    etcd trusts only its own CA (etcd_ca): the site CA, whose key the masters hold for the CSR signer, signs
    kubelet, kube-proxy and every CSR-API certificate, and none of them may be an etcd client. A PKI made
    before the etcd CA existed keeps etcd on the site CA (etcd_ca=SITE_CA) until it is migrated."""
    c = inv.cluster
    out: List[CertSpec] = []
    for h in inv.etcd_members:
        out.append(CertSpec(etcd_name(h), h.name, dns=frozenset({h.name, "localhost"}),
                            ips=frozenset({h.address, "127.0.0.1"}), server=True, client=True, ca=etcd_ca))
    out += [
        CertSpec("etcd-client-apiserver", etcd_users.APISERVER_CN, client=True, ca=etcd_ca),
        CertSpec("etcd-client-flanneld", "flanneld", client=True, ca=etcd_ca),
        CertSpec("etcd-healthcheck", "etcd-healthcheck", client=True, ca=etcd_ca),
    ]
    if inv.etcd_members:  # etcdctl on the etcd hosts, as a user with the root role (installer/etcd_auth.py)
        out.append(CertSpec(etcd_users.ADMIN_CERT, etcd_users.ADMIN_CN, client=True, ca=etcd_ca))
    out += [
        CertSpec(
            "apiserver", "kube-apiserver", server=True,
            dns=frozenset({"kubernetes", "kubernetes.default", "kubernetes.default.svc",
                           f"kubernetes.default.svc.{c.domain}", "localhost"} | {m.name for m in inv.masters}),
            ips=frozenset({c.vip, "127.0.0.1", c.kubernetes_service_ip} | {m.address for m in inv.masters}),
        ),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True),
        CertSpec("admin", "admin", ("system:masters",), client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", client=True),
    ]
    for h in inv.nodes:
        out.append(CertSpec(kubelet_name(h), f"system:node:{h.name}", ("system:nodes",), client=True))
        out.append(CertSpec(kubelet_server_name(h), h.name, dns=frozenset({h.name}),
                            ips=frozenset({h.address}), server=True))
    r = inv.registry
    if r.mode == "install" and not r.insecure:
        out.append(CertSpec("registry", r.hostname, dns=frozenset({r.hostname}), ips=frozenset({r.address}),
                            server=True))
    return out


# ---------------------------------------------------------------- pure certificate helpers

def new_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1 'RSA PRIVATE KEY' PEM: readable by openssl 1.0.2, Go and every kube component."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, orgs: Tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str, now: dt.datetime, days: int = CA_DAYS) -> Tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed CA certificate valid for `days`."""
    key = new_key()
    name = _name(cn, ("k8s-offline",))
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(spec: CertSpec, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, now: dt.datetime,
          days: int) -> Tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new key and a certificate for spec, signed by the CA; never outlives the CA."""
    key = new_key()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if spec.server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if spec.client else []
    b = (
        x509.CertificateBuilder().subject_name(_name(spec.cn, spec.orgs)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans: List[x509.GeneralName] = [x509.DNSName(d) for d in sorted(spec.dns)]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(spec.ips, key=ipaddress.ip_address)]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def cert_names(cert: x509.Certificate) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """(DNS SANs, IP SANs) of a certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    return (frozenset(san.get_values_for_type(x509.DNSName)),
            frozenset(str(i) for i in san.get_values_for_type(x509.IPAddress)))


def _usages(cert: x509.Certificate) -> FrozenSet[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    return frozenset(names.get(o, o.dotted_string) for o in eku)


def _subject(cert: x509.Certificate) -> Tuple[str, Tuple[str, ...]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cn[0].value) if cn else ""), tuple(sorted(str(o.value) for o in orgs))


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ca_cert's key signed cert."""
    if cert.issuer != ca_cert.subject:
        return False
    try:
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                                    cert.signature_hash_algorithm)
    except (InvalidSignature, TypeError, ValueError):  # TypeError: not an RSA key
        return False
    return True


def mismatch(spec: CertSpec, cert: x509.Certificate, ca_cert: x509.Certificate) -> Optional[str]:
    """Why cert does not fit spec (names, usages, issuer: ca_cert is spec.ca's), or None when it does."""
    if not signed_by(cert, ca_cert):
        return "not signed by the " + ("etcd CA" if spec.ca == ETCD_CA else "site CA")
    cn, orgs = _subject(cert)
    if (cn, orgs) != (spec.cn, tuple(sorted(spec.orgs))):
        return f"subject changed: CN={cn} O={','.join(orgs)} -> CN={spec.cn} O={','.join(spec.orgs)}"
    dns, ips = cert_names(cert)
    if (dns, ips) != (spec.dns, spec.ips):
        added = sorted(f"DNS:{d}" for d in spec.dns - dns) + sorted(f"IP:{i}" for i in spec.ips - ips)
        removed = sorted(f"DNS:{d}" for d in dns - spec.dns) + sorted(f"IP:{i}" for i in ips - spec.ips)
        return "SANs changed: " + " ".join([f"+{a}" for a in added] + [f"-{r}" for r in removed])
    if _usages(cert) != spec.usages:
        return f"usages changed: {','.join(sorted(_usages(cert)))} -> {','.join(sorted(spec.usages))}"
    return None


def days_left(cert: x509.Certificate, now: dt.datetime) -> int:
    return (cert.not_valid_after_utc - now).days


def _sans_text(cert: x509.Certificate) -> Tuple[str, ...]:
    dns, ips = cert_names(cert)
    return tuple(sorted(f"DNS:{d}" for d in dns)) + tuple(f"IP:{i}" for i in sorted(ips, key=ipaddress.ip_address))


# ---------------------------------------------------------------- the state directory

def _write_private(path: Path, data: bytes) -> None:
    """Write a key 0600 from the first byte on (no window where it is world-readable), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask; be explicit
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class Pki:
    """The PKI in <state>/pki: the CA, the service-account key pair and every issued certificate."""

    def __init__(self, state_dir: Path, clock: Clock = utcnow) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "pki"
        self.clock = clock

    # -- files
    def crt_path(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def read(self, name: str) -> Tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of an issued certificate."""
        try:
            return self.crt_path(name).read_bytes(), self.key_path(name).read_bytes()
        except FileNotFoundError:
            raise Error(f"certificate {name!r} is missing from {self.dir}",
                        context="reading the PKI", hint="run the pki step (installer render/apply) first") from None

    def ca_pem(self) -> bytes:
        return self.crt_path(SITE_CA).read_bytes()

    def etcd_ca_name(self) -> str:
        """The CA etcd trusts: ETCD_CA, or SITE_CA for a PKI made before the etcd CA existed."""
        return ETCD_CA if self.crt_path(ETCD_CA).exists() else SITE_CA

    def etcd_ca_pem(self) -> bytes:
        return self.crt_path(self.etcd_ca_name()).read_bytes()

    def specs(self, inv: Inventory) -> List[CertSpec]:
        return specs(inv, self.etcd_ca_name())

    def _load_cert(self, name: str) -> Optional[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificate(self.crt_path(name).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # unreadable: treated like a missing certificate and reissued

    def _key_matches(self, name: str, cert: x509.Certificate) -> bool:
        try:
            key = serialization.load_pem_private_key(self.key_path(name).read_bytes(), password=None)
        except (FileNotFoundError, ValueError, TypeError):
            return False
        return key.public_key().public_numbers() == cert.public_key().public_numbers()

    # -- the CA
    def load_or_create_ca(self, inv: Inventory) -> Tuple[rsa.RSAPrivateKey, x509.Certificate, bool]:
        """The site CA (created only when the directory holds no PKI at all, together with the etcd CA);
        (key, cert, created)."""
        ca_key, ca_cert, created = self._load_or_create(SITE_CA, inv)
        if created:
            ca_key2, ca_cert2 = make_ca(f"{inv.cluster.name} etcd CA", self.clock())
            _write_private(self.key_path(ETCD_CA), key_pem(ca_key2))
            _write_public(self.crt_path(ETCD_CA), cert_pem(ca_cert2))
        return ca_key, ca_cert, created

    def load_ca(self, name: str) -> Tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """A CA that must exist (the site CA, or the etcd CA once there)."""
        crt, key = self.crt_path(name), self.key_path(name)
        if not key.exists():
            raise Error(f"{self.dir} holds {crt.name} but no {key.name}", context="loading the CAs", hint=HINT_CA)
        return self._load_or_create(name, None)[:2]

    def _load_or_create(self, name: str, inv: Optional[Inventory]) -> Tuple[rsa.RSAPrivateKey, x509.Certificate, bool]:
        crt, key = self.crt_path(name), self.key_path(name)
        if crt.exists() and key.exists():
            try:
                ca_cert = x509.load_pem_x509_certificate(crt.read_bytes())
                ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
            except ValueError as e:
                raise Error(f"the site CA in {self.dir} is unreadable: {e}", context="loading the site CA",
                            hint=HINT_CA) from None
            if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
                raise Error(f"{key} does not belong to {crt}", context="loading the site CA", hint=HINT_CA)
            return ca_key, ca_cert, False
        others = [p.name for p in sorted(self.dir.glob("*.crt"))] if self.dir.exists() else []
        if key.exists() or others or inv is None:
            missing = key.name if not key.exists() else crt.name
            raise Error(f"{self.dir} holds certificates but no {missing}",
                        context="loading the site CA",
                        details=[f"present: {', '.join(others) or 'ca.key'}"],
                        hint=HINT_CA + "; to start over on purpose, move the whole pki directory away")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        ca_key, ca_cert = make_ca(f"{inv.cluster.name} site CA", self.clock())  # type: ignore[union-attr]
        _write_private(key, key_pem(ca_key))
        _write_public(crt, cert_pem(ca_cert))
        return ca_key, ca_cert, True

    def _ensure_sa(self) -> Optional[str]:
        """Create the service-account key pair once; it has no names and never expires."""
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        if key.exists() and pub.exists():
            return None
        sa = new_key()
        _write_private(key, key_pem(sa))
        _write_public(pub, sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
        return "created"

    def _ensure_encryption_key(self) -> None:
        """Create the secrets' aescbc key once, here on site (never in a bundle); it is never replaced."""
        path = self.dir / ENCRYPTION_KEY
        if path.exists():
            self.encryption_key()  # unreadable: an error, never a new key (the old secrets would be lost)
            return
        _write_private(path, base64.b64encode(os.urandom(ENCRYPTION_KEY_BYTES)) + b"\n")

    def encryption_key(self) -> str:
        """The aescbc key (base64 text) every master's EncryptionConfig carries."""
        path = self.dir / ENCRYPTION_KEY
        try:
            text = path.read_text(encoding="ascii").strip()
            ok = len(base64.b64decode(text, validate=True)) == ENCRYPTION_KEY_BYTES
        except FileNotFoundError:
            raise Error(f"the secrets' encryption key {path} is missing", context="reading the PKI",
                        hint="run the pki step (installer render/apply) first") from None
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            ok = False
        if not ok:
            raise Error(f"{path} does not hold a base64-encoded {ENCRYPTION_KEY_BYTES}-byte key",
                        context="reading the secrets' encryption key",
                        hint="restore it from your backup of the state directory: the secrets stored in etcd "
                             "can be read only with the key that encrypted them")
        return text

    # -- issuing
    def ensure(self, inv: Inventory) -> IssueReport:
        """Create what is missing, reissue what changed or expires soon, keep the rest."""
        ca_key, ca_cert, created = self.load_or_create_ca(inv)
        cas = {SITE_CA: (ca_key, ca_cert)}
        if self.etcd_ca_name() == ETCD_CA:
            cas[ETCD_CA] = self.load_ca(ETCD_CA)
        report = IssueReport(ca_created=created)
        now = self.clock()
        renew = inv.cluster.renew_within_days
        sa = self._ensure_sa()
        report.entries.append(IssueEntry("sa", "issued" if sa else "kept", "new key pair" if sa else "present"))
        self._ensure_encryption_key()
        for spec in self.specs(inv):
            signer_key, signer = cas[spec.ca]
            reason = self._why_reissue(spec, signer, now, renew)
            if reason is None:
                report.entries.append(IssueEntry(spec.name, "kept", "valid, names match"))
                continue
            key, cert = issue(spec, signer_key, signer, now, inv.cluster.cert_days)
            _write_private(self.key_path(spec.name), key_pem(key))
            _write_public(self.crt_path(spec.name), cert_pem(cert))
            report.entries.append(IssueEntry(spec.name, "issued", reason))
        return report

    def _why_reissue(self, spec: CertSpec, ca_cert: x509.Certificate, now: dt.datetime,
                     renew: int) -> Optional[str]:
        cert = self._load_cert(spec.name)
        if cert is None:
            return "new"
        if not self._key_matches(spec.name, cert):
            return "key missing or does not match"
        why = mismatch(spec, cert, ca_cert)
        if why:
            return why
        left = days_left(cert, now)
        if left <= renew:
            return f"expires in {left} days (renew_within_days={renew})"
        return None

    # -- what each host gets
    def material_for(self, inv: Inventory, host: Host) -> Dict[str, File]:
        """{remote path: File} of CA, certificates, keys and kubeconfigs the host needs by its roles."""
        P = PATHS
        out: Dict[str, File] = {}
        ca = self.ca_pem()

        def pair(name: str, crt_path: str, key_path: str) -> None:
            crt, key = self.read(name)
            out[crt_path] = File(crt, 0o644)
            out[key_path] = File(key, 0o600)

        def kcfg(path: str, name: str, user: str, server: str) -> None:
            crt, key = self.read(name)
            out[path] = File(kubeconfig.build(cluster=inv.cluster.name, server=server, user=user, ca_pem=ca,
                                              cert_pem=crt, key_pem=key), 0o600)

        vip_url = f"https://{inv.cluster.vip}:{inv.cluster.lb_port}"
        if host.has("etcd"):
            out[P["etcd_ca"]] = File(self.etcd_ca_pem(), 0o644)  # the only CA etcd trusts (its key stays here)
            pair(etcd_name(host), P["etcd_crt"], P["etcd_key"])
            pair(etcd_users.ADMIN_CERT, P["etcd_admin_crt"], P["etcd_admin_key"])  # etcdctl there (root role)
        if host.has("master") or host.has("node"):
            out[P["ca"]] = File(ca, 0o644)
            out[P["etcd_client_ca"]] = File(self.etcd_ca_pem(), 0o644)  # apiserver and flanneld verify etcd
            pair("etcd-client-flanneld", P["flanneld_etcd_crt"], P["flanneld_etcd_key"])  # flanneld runs on both
        if host.has("master"):
            out[P["ca_key"]] = File(self.key_path("ca").read_bytes(), 0o600)  # cluster-signing (CSR approval)
            out[P["sa_key"]] = File((self.dir / "sa.key").read_bytes(), 0o600)
            out[P["sa_pub"]] = File((self.dir / "sa.pub").read_bytes(), 0o644)
            out[P["encryption_config"]] = encryption_config(self.encryption_key())  # the same on every master
            pair("apiserver", P["apiserver_crt"], P["apiserver_key"])
            pair("apiserver-kubelet-client", P["apiserver_kubelet_client_crt"], P["apiserver_kubelet_client_key"])
            pair("etcd-client-apiserver", P["apiserver_etcd_client_crt"], P["apiserver_etcd_client_key"])
            # controller-manager and scheduler use the apiserver of their own host, as the seeds do; it
            # listens on the host address only (--bind-address), so that is the URL rather than 127.0.0.1
            local_url = f"https://{host.address}:{inv.cluster.apiserver_port}"
            kcfg(P["admin_kubeconfig"], "admin", "admin", vip_url)
            kcfg(P["cm_kubeconfig"], "controller-manager", "system:kube-controller-manager", local_url)
            kcfg(P["scheduler_kubeconfig"], "scheduler", "system:kube-scheduler", local_url)
        if host.has("node"):
            pair(kubelet_server_name(host), P["kubelet_crt"], P["kubelet_key"])
            kcfg(P["kubelet_kubeconfig"], kubelet_name(host), f"system:node:{host.name}", vip_url)
            kcfg(P["proxy_kubeconfig"], "kube-proxy", "system:kube-proxy", vip_url)
            reg_ca = self.registry_ca(inv)
            if reg_ca is not None:
                out[registry_ca_path(inv)] = File(reg_ca, 0o644)
        return out

    def registry_ca(self, inv: Inventory) -> Optional[bytes]:
        """The CA docker must trust for the registry: ours, the external one's, or None (plain HTTP)."""
        r = inv.registry
        if r.insecure:
            return None
        if r.mode == "install":
            return self.ca_pem()
        if r.ca_file:
            try:
                return Path(r.ca_file).expanduser().read_bytes()
            except OSError as e:
                raise Error(f"cannot read registry.ca_file {r.ca_file}: {e.strerror}",
                            context="collecting the registry CA", hint="fix registry.ca_file in the inventory") from None
        return None

    def registry_material(self, inv: Inventory) -> Dict[str, File]:
        """Harbor's serving certificate and key at the paths harbor.cfg points to (install mode only)."""
        r = inv.registry
        if r.mode != "install" or r.insecure:
            return {}
        crt, key = self.read("registry")
        base = f"{r.data_dir.rstrip('/')}/cert"
        return {f"{base}/server.crt": File(crt + self.ca_pem(), 0o644), f"{base}/server.key": File(key, 0o600)}

    def admin_kubeconfig(self, inv: Inventory) -> bytes:
        """The admin kubeconfig for the control host (through the VIP)."""
        crt, key = self.read("admin")
        return kubeconfig.build(cluster=inv.cluster.name, server=f"https://{inv.cluster.vip}:{inv.cluster.lb_port}",
                                user="admin", ca_pem=self.ca_pem(), cert_pem=crt, key_pem=key)


def check(state_dir: Path, inv: Inventory, clock: Clock = utcnow) -> List[CertStatus]:
    """Every certificate of the state directory against the inventory: names, issuer, days left."""
    p = Pki(state_dir, clock)
    now = clock()
    renew = inv.cluster.renew_within_days
    ca_cert = p._load_cert(SITE_CA)
    if ca_cert is None:
        raise Error(f"no site CA in {p.dir}", context="checking certificates",
                    hint="run the pki step (installer render/apply) first")
    cas = {SITE_CA: ca_cert}
    out = [_status(SITE_CA, ca_cert, now, renew, None)]
    if p.etcd_ca_name() == ETCD_CA:
        cas[ETCD_CA] = p._load_cert(ETCD_CA)
        if cas[ETCD_CA] is None:
            raise Error(f"{p.crt_path(ETCD_CA)} is unreadable", context="checking certificates", hint=HINT_CA)
        out.append(_status(ETCD_CA, cas[ETCD_CA], now, renew, None))
    for spec in p.specs(inv):
        cert = p._load_cert(spec.name)
        if cert is None:
            out.append(CertStatus(spec.name, f"CN={spec.cn}", (), "", None, None, "missing", "no certificate"))
            continue
        why = mismatch(spec, cert, cas[spec.ca])
        if why is None and not p._key_matches(spec.name, cert):
            why = "key missing or does not match"
        out.append(_status(spec.name, cert, now, renew, why))
    return out


def _status(name: str, cert: x509.Certificate, now: dt.datetime, renew: int, why: Optional[str]) -> CertStatus:
    left = days_left(cert, now)
    if why:
        status = "mismatch"
    elif left <= renew:
        status, why = "expiring", f"expires in {left} days"
    else:
        status, why = "ok", ""
    return CertStatus(name, cert.subject.rfc4514_string(), _sans_text(cert), cert.issuer.rfc4514_string(),
                      cert.not_valid_after_utc, left, status, why)
