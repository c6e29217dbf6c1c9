"""PKI: names and SANs from the inventory, key modes, a CA that is never regenerated, minimal reissue."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contract.errors import Error
from installer import inventory, kubeconfig, pki, pki_material, pki_specs, pki_status, pki_x509

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "golden" / "example" / "inventory.yaml"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def at(t: dt.datetime):
    return lambda: t


@pytest.fixture(scope="module")
def inv():
    return inventory.load(EXAMPLE)


@pytest.fixture(scope="module")
def built(tmp_path_factory, inv):
    """One PKI for the example inventory, made once per module (RSA keys cost ~50 ms each)."""
    state = tmp_path_factory.mktemp("pki-state")
    report = pki.Pki(state, clock=at(T0)).ensure(inv)
    return state, report


@pytest.fixture
def state(built, tmp_path):
    """A private copy of the module's PKI that a test may change."""
    dst = tmp_path / "state"
    shutil.copytree(built[0], dst)
    return dst


def load(state: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((state / "pki" / f"{name}.crt").read_bytes())


def subject(cert):
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cn, orgs


def sans(cert):
    dns, ips = pki_x509.cert_names(cert)
    return set(dns), set(ips)


def with_cluster(inv, **changes):
    return inv.model_copy(update={"cluster": inv.cluster.model_copy(update=changes)})


def test_first_run_creates_ca_and_every_certificate(built, inv):
    _, report = built
    assert report.ca_created
    assert report.kept == []
    assert set(report.issued) == {s.name for s in pki_specs.specs(inv)} | {"sa"}


def test_apiserver_sans_name_vip_masters_service_ip_and_domain(built, inv):
    dns, ips = sans(load(built[0], "apiserver"))
    assert ips == {"192.168.10.100", "192.168.10.11", "192.168.10.12", "192.168.10.13", "127.0.0.1", "10.254.0.1"}
    assert dns == {"kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", "localhost", "k8s-master1", "k8s-master2", "k8s-master3"}


def test_etcd_member_cert_serves_and_is_a_client(built):
    cert = load(built[0], "etcd-k8s-master2")
    assert sans(cert) == ({"k8s-master2", "localhost"}, {"192.168.10.12", "127.0.0.1"})
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize("node", ["k8s-node1", "k8s-node2"])
def test_kubelet_client_cert_per_node(built, node):
    assert subject(load(built[0], f"kubelet-{node}")) == (f"system:node:{node}", ["system:nodes"])
    assert sans(load(built[0], f"kubelet-server-{node}"))[0] == {node}


@pytest.mark.parametrize("name,cn,orgs", [
    ("admin", "admin", ["system:masters"]),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"]),
    ("controller-manager", "system:kube-controller-manager", []),
    ("scheduler", "system:kube-scheduler", []),
    ("kube-proxy", "system:kube-proxy", []),
])
def test_client_identities(built, name, cn, orgs):
    assert subject(load(built[0], name)) == (cn, orgs)


def test_registry_cert_names_hostname_and_address(built):
    assert sans(load(built[0], "registry")) == ({"harbor.example.com"}, {"192.168.10.20"})


def test_every_cert_is_signed_by_its_ca_and_etcd_trusts_only_its_own(built, inv):
    """etcd's servers, peers and clients come from the etcd CA; nothing the site CA signs (kubelet, kube-proxy,
    the CSR API's certificates) is an etcd client, and no etcd certificate is signed by the site CA."""
    ca, etcd_ca = load(built[0], "ca"), load(built[0], "etcd-ca")
    assert ca.subject != etcd_ca.subject
    etcd_names = {"etcd-client-apiserver", "etcd-client-flanneld", "etcd-healthcheck", "etcd-admin"} | {
        f"etcd-{h.name}" for h in inv.etcd_members}
    seen = set()
    for crt in (built[0] / "pki").glob("*.crt"):
        if crt.stem in ("ca", "etcd-ca"):
            continue
        cert = load(built[0], crt.stem)
        want, other = (etcd_ca, ca) if crt.stem in etcd_names else (ca, etcd_ca)
        assert pki_x509.signed_by(cert, want) and not pki_x509.signed_by(cert, other), crt.name
        seen.add(crt.stem)
    assert etcd_names <= seen and {"kubelet-k8s-node1", "kube-proxy", "admin"} <= seen


def test_hosts_get_the_etcd_ca_but_never_its_key(built, inv):
    p = pki.Pki(built[0])
    etcd_ca = (built[0] / "pki" / "etcd-ca.crt").read_bytes()
    etcd_key = (built[0] / "pki" / "etcd-ca.key").read_bytes()
    for h in inv.hosts:
        files = pki_material.material_for(p, inv, h)
        assert all(f.content != etcd_key for f in files.values()), h.name
        if h.has("etcd"):
            assert files["/etc/etcd/pki/ca.crt"].content == etcd_ca
        if h.has("master") or h.has("node"):
            assert files["/etc/kubernetes/pki/etcd-ca.crt"].content == etcd_ca


def test_a_pki_from_before_the_etcd_ca_keeps_etcd_on_the_site_ca(tmp_path, inv):
    """Legacy state directories are not migrated silently (a rolling restart onto a new CA would split the
    members): etcd stays on the site CA, and `installer check` reports it (installer/etcd_access.py)."""
    p = pki.Pki(tmp_path, clock=at(T0))
    p.ensure(inv)
    for name in ("etcd-ca.crt", "etcd-ca.key"):
        (tmp_path / "pki" / name).unlink()
    for spec in pki_specs.specs(inv):
        if spec.ca == pki_specs.ETCD_CA:  # as the old installer issued them
            ca_key, ca_cert = p.load_ca("ca")
            key, cert = pki_x509.issue(spec, ca_key, ca_cert, T0, 3650)
            (tmp_path / "pki" / f"{spec.name}.key").write_bytes(pki_x509.key_pem(key))
            (tmp_path / "pki" / f"{spec.name}.crt").write_bytes(pki_x509.cert_pem(cert))
    report = pki.Pki(tmp_path, clock=at(T0 + dt.timedelta(days=1))).ensure(inv)
    assert report.issued == [] and not (tmp_path / "pki" / "etcd-ca.crt").exists()
    assert p.etcd_ca_name() == "ca"


def test_keys_are_0600_certs_0644_dir_0700(built):
    d = built[0] / "pki"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in d.iterdir():
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == (0o600 if f.suffix == ".key" else 0o644), f.name


def test_rerun_keeps_everything_and_never_touches_the_ca(state, inv):
    before = {f.name: f.read_bytes() for f in (state / "pki").iterdir()}
    report = pki.Pki(state, clock=at(T0 + dt.timedelta(days=1))).ensure(inv)
    assert not report.ca_created and report.issued == []
    assert {f.name: f.read_bytes() for f in (state / "pki").iterdir()} == before


@pytest.mark.parametrize("damage", ["other key", "garbled", "missing"])
def test_a_key_that_is_not_its_certificates_reissues_it(state, inv, damage):
    """key_matches skips the RSA consistency check of loading (speed): the comparison still catches these."""
    key = state / "pki" / "apiserver.key"
    if damage == "other key":
        key.write_bytes((state / "pki" / "kubelet-client.key").read_bytes() if (state / "pki" / "kubelet-client.key")
                        .exists() else (state / "pki" / "admin.key").read_bytes())
    elif damage == "garbled":
        key.write_bytes(key.read_bytes()[:200] + b"garbage" + key.read_bytes()[207:])
    else:
        key.unlink()
    report = pki.Pki(state, clock=at(T0)).ensure(inv)
    assert report.issued == ["apiserver"]
    assert report.entries[[e.name for e in report.entries].index("apiserver")].reason == "key missing or does not match"


def test_missing_ca_key_with_certs_present_is_refused(state, inv):
    (state / "pki" / "ca.key").unlink()
    with pytest.raises(Error) as e:
        pki.Pki(state, clock=at(T0)).ensure(inv)
    assert "ca.key" in e.value.message and e.value.hint
    assert not (state / "pki" / "ca.key").exists()


def test_missing_ca_cert_with_key_present_is_refused(state, inv):
    (state / "pki" / "ca.crt").unlink()
    with pytest.raises(Error):
        pki.Pki(state, clock=at(T0)).ensure(inv)


def test_new_vip_reissues_exactly_the_apiserver_cert(state, inv):
    old = (state / "pki" / "apiserver.crt").read_bytes()
    report = pki.Pki(state, clock=at(T0)).ensure(with_cluster(inv, vip="192.168.10.200"))
    assert report.issued == ["apiserver"]
    assert "+IP:192.168.10.200" in report.entries[[e.name for e in report.entries].index("apiserver")].reason
    assert (state / "pki" / "apiserver.crt").read_bytes() != old
    assert "192.168.10.200" in sans(load(state, "apiserver"))[1]


def test_new_registry_hostname_reissues_only_the_registry_cert(state, inv):
    reg = inv.registry.model_copy(update={"hostname": "registry.example.com"})
    report = pki.Pki(state, clock=at(T0)).ensure(inv.model_copy(update={"registry": reg}))
    assert report.issued == ["registry"]


def test_cert_expiring_within_renew_days_is_reissued(state, inv):
    p = pki.Pki(state, clock=at(T0))
    ca_key, ca_cert, _ = p.load_or_create_ca(inv)
    spec = next(s for s in pki_specs.specs(inv) if s.name == "kube-proxy")
    key, cert = pki_x509.issue(spec, ca_key, ca_cert, T0, days=20)  # inside renew_within_days=30
    (state / "pki" / "kube-proxy.key").write_bytes(pki_x509.key_pem(key))
    (state / "pki" / "kube-proxy.crt").write_bytes(pki_x509.cert_pem(cert))
    report = p.ensure(inv)
    assert report.issued == ["kube-proxy"]
    assert "expires in 20 days" in next(e.reason for e in report.entries if e.name == "kube-proxy")
    assert pki_x509.days_left(load(state, "kube-proxy"), T0) > 3000


def test_all_certs_renewed_when_the_clock_reaches_the_renew_window(tmp_path, inv):
    short = with_cluster(inv, cert_days=60)
    pki.Pki(tmp_path, clock=at(T0)).ensure(short)
    assert pki.Pki(tmp_path, clock=at(T0 + dt.timedelta(days=20))).ensure(short).issued == []
    later = pki.Pki(tmp_path, clock=at(T0 + dt.timedelta(days=31))).ensure(short)
    assert set(later.issued) == {s.name for s in pki_specs.specs(short)} and not later.ca_created


def test_check_reports_ok_mismatch_and_expiring(state, inv):
    rows = {r.name: r for r in pki_status.check(state, inv, clock=at(T0))}
    assert rows["ca"].status == "ok" and rows["ca"].days_left >= 3649
    assert all(r.status == "ok" for r in rows.values()), [r for r in rows.values() if r.status != "ok"]
    assert "IP:192.168.10.100" in rows["apiserver"].sans and "CN=kube-apiserver" in rows["apiserver"].subject
    rows = {r.name: r for r in pki_status.check(state, with_cluster(inv, vip="192.168.10.200"), clock=at(T0))}
    assert rows["apiserver"].status == "mismatch" and "192.168.10.200" in rows["apiserver"].reason
    assert rows["admin"].status == "ok"
    late = T0 + dt.timedelta(days=3640)
    assert {r.status for r in pki_status.check(state, inv, clock=at(late))} == {"expiring"}


def test_material_for_master_and_node(state, inv):
    p = pki.Pki(state, clock=at(T0))
    m1 = pki_material.material_for(p, inv, inv.host("k8s-master1"))
    n1 = pki_material.material_for(p, inv, inv.host("k8s-node1"))
    assert "/etc/kubernetes/pki/ca.key" in m1 and "/etc/kubernetes/pki/ca.key" not in n1
    assert "/etc/etcd/pki/server.key" in m1 and "/etc/etcd/pki/server.key" not in n1
    assert "/etc/kubernetes/kubelet.kubeconfig" not in m1  # master without the node role
    assert "/etc/docker/certs.d/harbor.example.com/ca.crt" in n1
    for files in (m1, n1):
        for path, f in files.items():
            secret = path.endswith((".key", ".kubeconfig"))
            assert f.mode == (0o600 if secret else 0o644), path
    kc = kubeconfig.parse(n1["/etc/kubernetes/kubelet.kubeconfig"].content)
    assert kc["server"] == "https://192.168.10.100:8443"
    assert subject(x509.load_pem_x509_certificate(kc["cert_pem"]))[0] == "system:node:k8s-node1"
    cm = kubeconfig.parse(m1["/etc/kubernetes/controller-manager.kubeconfig"].content)
    assert cm["server"] == "https://192.168.10.11:6443"  # its own apiserver
    assert kubeconfig.parse(m1["/etc/kubernetes/admin.kubeconfig"].content)["server"] == "https://192.168.10.100:8443"


def test_kubeconfig_redact_hides_every_secret(state, inv):
    data = pki_material.admin_kubeconfig(pki.Pki(state), inv)
    red = kubeconfig.redact(data).decode()
    assert "LS0t" not in red and red.count(kubeconfig.PLACEHOLDER) == 3


def test_empty_state_dir_gets_a_fresh_ca(tmp_path, inv):
    _, ca_cert, created = pki.Pki(tmp_path, clock=at(T0)).load_or_create_ca(inv)
    assert created and ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (ca_cert.not_valid_after_utc - T0).days == pki_x509.CA_DAYS


def test_a_damaged_ca_key_is_caught_when_it_signs(tmp_path, inv):
    """The CA keys load without OpenSSL's RSA consistency check (0.2 s each, every run): a key whose public
    numbers still match but whose private part is damaged is caught by the signature check of issue()."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    p = pki.Pki(tmp_path, clock=at(T0))
    p.load_or_create_ca(inv)
    key = serialization.load_pem_private_key(p.key_path(pki_specs.SITE_CA).read_bytes(), password=None)
    n = key.private_numbers()
    bad = rsa.RSAPrivateNumbers(n.p, n.q, n.d ^ 2, n.dmp1 ^ 2, n.dmq1 ^ 2, n.iqmp, n.public_numbers)
    bad_key = bad.private_key(unsafe_skip_rsa_key_validation=True)
    p.key_path(pki_specs.SITE_CA).write_bytes(bad_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(Error) as e:
        p.ensure(inv)
    assert "signatures its certificate does not verify" in e.value.message and "backup" in e.value.hint
