"""Pure certificate helpers: RSA keys, CAs, issuing a CertSpec, and reading names, usages and issuer back."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import FrozenSet, List, Optional, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contract.errors import Error
from installer.pki_specs import ETCD_CA, CertSpec

CA_DAYS = 3650
KEY_BITS = 2048
CLOCK_SKEW = dt.timedelta(hours=1)  # hosts' clocks may lag the control host's a little


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
    cert = b.sign(ca_key, hashes.SHA256())
    if not signed_by(cert, ca_cert):  # the CA key was loaded without its RSA consistency check
        raise Error(f"the key of {ca_cert.subject.rfc4514_string()} makes signatures its certificate does not verify",
                    context=f"issuing the certificate {spec.name}",
                    hint="the CA key file is damaged: restore the state directory's pki/ from your backup")
    return key, cert


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


def sans_text(cert: x509.Certificate) -> Tuple[str, ...]:
    dns, ips = cert_names(cert)
    return tuple(sorted(f"DNS:{d}" for d in dns)) + tuple(f"IP:{i}" for i in sorted(ips, key=ipaddress.ip_address))

