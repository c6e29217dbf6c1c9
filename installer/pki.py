"""The site PKI in the control host's state directory: the two CAs, the service-account key pair, the secrets'
encryption key and issuing (or keeping) every certificate the inventory asks for (installer.pki_specs).

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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from contract.errors import Error
from installer.inventory import Inventory
from installer.pki_specs import ETCD_CA, SITE_CA, CertSpec, specs
from installer.pki_x509 import cert_pem, days_left, issue, key_pem, make_ca, mismatch, new_key

Clock = Callable[[], dt.datetime]
ENCRYPTION_KEY = "encryption.key"  # <state>/pki: base64 of the 32-byte aescbc key of the secrets, 0600
ENCRYPTION_KEY_BYTES = 32
HINT_CA = "restore ca.key from your backup of the state directory; a new CA would invalidate every certificate"


def utcnow() -> dt.datetime:
    """The real clock (timezone-aware UTC)."""
    return dt.datetime.now(dt.timezone.utc)


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

    def load_cert(self, name: str) -> Optional[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificate(self.crt_path(name).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # unreadable: treated like a missing certificate and reissued

    def key_matches(self, name: str, cert: x509.Certificate) -> bool:
        """Whether the key file holds the private key of cert. The RSA consistency check of loading (about 70 ms a
        key, every run) is skipped: the keys are this directory's own, written 0600 by issue(); a key that is not
        the certificate's, or one that does not parse, still fails the comparison of the public numbers."""
        try:
            key = serialization.load_pem_private_key(self.key_path(name).read_bytes(), password=None,
                                                     unsafe_skip_rsa_key_validation=True)
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
                # the RSA consistency check of loading (about 0.2 s a CA key, on every run) is skipped: the
                # public numbers are compared below, and issue() verifies each certificate it signs
                ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None,
                                                            unsafe_skip_rsa_key_validation=True)
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
        cert = self.load_cert(spec.name)
        if cert is None:
            return "new"
        if not self.key_matches(spec.name, cert):
            return "key missing or does not match"
        why = mismatch(spec, cert, ca_cert)
        if why:
            return why
        left = days_left(cert, now)
        if left <= renew:
            return f"expires in {left} days (renew_within_days={renew})"
        return None

    # -- what each host gets
