"""Zero egress: every image reference of the desired state is listed with its origin and judged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from contract.errors import Error
from installer import addons, egress
from installer import inventory as inventory_mod
from installer.render import File, render_all
from tests.fixtures.harbor import layout as L

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "reg.test:5000"
INV = {
    "cluster": {"name": "t", "vip": "198.18.0.100"},
    "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.0.1", "port": 5000,
                 "insecure": True},
    "hosts": [{"name": "h1", "address": "198.18.0.11", "roles": ["master", "etcd", "lb"]},
              {"name": "h4", "address": "198.18.0.14", "roles": ["node"]},
              {"name": "h5", "address": "198.18.0.15", "roles": ["node"]}],
}
NAMES = {"pause": "pause-amd64:3.1", "kube-dns": "k8s-dns-kube-dns-amd64:1.14.10",
         "dnsmasq": "k8s-dns-dnsmasq-nanny-amd64:1.14.10", "dns-sidecar": "k8s-dns-sidecar-amd64:1.14.10",
         "dashboard": "kubernetes-dashboard-amd64:v1.8.3", "heapster": "heapster-amd64:v1.5.3",
         "metrics-server": "metrics-server-amd64:v0.2.1"}
IMAGES = {role: f"{ENDPOINT}/kubernetes/{name}" for role, name in NAMES.items()}


def digest_of(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


BUNDLE = [egress.BundleImage(f"{ENDPOINT}/kubernetes/{n.split(':')[0]}", n.split(":")[1], digest_of(n))
          for n in NAMES.values()]


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    p.write_text(yaml.safe_dump(INV))
    return inventory_mod.load(p)


def site_files(inv, images=IMAGES):
    files = render_all(inv, pki_files={"h1": {"/etc/etcd/pki/server.key": File(b"--pod-infra-container-image=x",
                                                                                0o600)}}, images=images)
    files["h1"].update(addons.files(ROOT / "manifests", inv, images))
    return files


class FakeRegistry:
    """repo -> {reference: digest}; records what was asked."""

    def __init__(self, served):
        self.served = served
        self.asked = []

    def manifest_digest(self, repo, reference):
        self.asked.append((repo, reference))
        return self.served.get(repo, {}).get(reference)


def test_site_only_inventory_passes_and_lists_every_reference(inv):
    report = egress.scan(site_files(inv), ENDPOINT, BUNDLE)
    assert report.ok, report.problems
    by_ref = report.by_ref()
    assert set(by_ref) == set(IMAGES.values())
    pause = [r.where for r in by_ref[IMAGES["pause"]]]
    # every node's kubelet flag, nothing from the masters (no kubelet) and nothing from the secret key file
    assert pause == ["h4:/etc/kubernetes/kubelet --pod-infra-container-image",
                     "h5:/etc/kubernetes/kubelet --pod-infra-container-image"]
    dns = [r.where for r in by_ref[IMAGES["dnsmasq"]]]
    assert dns == ["h1:/etc/kubernetes/addons/kube-dns.yaml Deployment kube-system/kube-dns container dnsmasq"]
    d = report.to_dict()
    assert d["ok"] and not d["problems"] and len(d["references"]) == len(report.refs) == 8
    assert "== images (zero egress" in report.text()
    assert "      h4, h5:/etc/kubernetes/kubelet --pod-infra-container-image" in report.text().splitlines()
    assert egress.results(report)[0].ok


def test_foreign_registries_in_addons_fail_naming_manifest_object_and_container(inv):
    files = site_files(inv)
    files["h1"]["/etc/kubernetes/addons/extra.yaml"] = File(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "extensions/v1beta1", "kind": "DaemonSet",
             "metadata": {"name": "agent", "namespace": "kube-system"},
             "spec": {"template": {"spec": {
                 "initContainers": [{"name": "init", "image": "docker.io/library/busybox"}],
                 "containers": [{"name": "agent", "image": f"{IMAGES['pause']}"}]}}}}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "image": "k8s.gcr.io/pause-amd64:3.1"}]}},
    ]).encode())
    report = egress.scan(files, ENDPOINT, BUNDLE)
    lines = [p.line() for p in report.problems]
    assert len(lines) == 2, lines
    assert lines[0].startswith("h1:/etc/kubernetes/addons/extra.yaml DaemonSet kube-system/agent initContainer "
                               "init: docker.io/library/busybox: registry docker.io is not the site registry")
    assert lines[1].startswith("h1:/etc/kubernetes/addons/extra.yaml Pod p container c: k8s.gcr.io/pause-amd64:3.1")
    err = report.error()
    assert isinstance(err, Error) and "2 image reference problems" in err.message
    assert err.details == lines and "bundle" in err.hint
    res = egress.results(report)
    assert [r.ok for r in res] == [False, False] and res[0].target.endswith("initContainer init")


def test_short_docker_hub_name_is_foreign(inv):
    files = {"h1": {"/etc/kubernetes/addons/x.yaml": File(b"kind: Pod\nmetadata: {name: p}\n"
                                                          b"spec:\n  containers:\n  - {name: b, image: busybox}\n")}}
    (p,) = egress.scan(files, ENDPOINT, BUNDLE).problems
    assert p.ref == "busybox" and "registry docker.io is not the site registry" in p.why


def test_kubelet_pause_from_another_registry_fails_naming_host_and_file(inv):
    images = dict(IMAGES, pause="k8s.gcr.io/pause-amd64:3.1")
    report = egress.scan(site_files(inv, images), ENDPOINT, BUNDLE)
    assert [p.where for p in report.problems] == ["h4:/etc/kubernetes/kubelet --pod-infra-container-image",
                                                  "h5:/etc/kubernetes/kubelet --pod-infra-container-image"]
    assert all(p.ref == "k8s.gcr.io/pause-amd64:3.1" and "k8s.gcr.io" in p.why for p in report.problems)


def test_site_registry_image_not_in_the_bundle_fails(inv):
    images = dict(IMAGES, pause=f"{ENDPOINT}/kubernetes/pause-amd64:3.2")
    (p, q) = egress.scan(site_files(inv, images), ENDPOINT, BUNDLE).problems
    assert p.ref == f"{ENDPOINT}/kubernetes/pause-amd64:3.2" and "not an image of the bundle" in p.why


def test_registry_digest_mismatch_and_absence_fail_with_a_fake_client(inv):
    served = {b.repo.split("/", 1)[1]: {b.tag: b.digest} for b in BUNDLE}
    reg = FakeRegistry(served)
    assert egress.scan(site_files(inv), ENDPOINT, BUNDLE, reg).ok
    assert len(reg.asked) == len(set(reg.asked)) == 7  # each image asked once, by repository and tag
    served["kubernetes/pause-amd64"]["3.1"] = "sha256:" + "0" * 64
    del served["kubernetes/heapster-amd64"]
    report = egress.scan(site_files(inv), ENDPOINT, BUNDLE, FakeRegistry(served))
    why = {(p.where.split(" ")[0], p.ref): p.why for p in report.problems}
    assert why[("h4:/etc/kubernetes/kubelet", IMAGES["pause"])] == (
        f"the site registry serves sha256:{'0' * 64}, the bundle has {digest_of(NAMES['pause'])}")
    assert "not in the site registry" in why[("h1:/etc/kubernetes/addons/metrics-server.yaml", IMAGES["heapster"])]
    assert len(report.problems) == 3 and report.registry_checked


def test_unreachable_registry_is_a_problem_not_a_crash(inv):
    class Down:
        def manifest_digest(self, repo, reference):
            raise Error("cannot connect to https://reg.test:5000: connection refused")

    report = egress.scan(site_files(inv), ENDPOINT, BUNDLE, Down())
    assert report.problems and all("did not answer: cannot connect" in p.why for p in report.problems)


def test_flags_in_env_files_and_command_lines():
    text = ('# --pod-infra-container-image=commented.out/x:1\n'
            'KUBELET_ARGS="--address=1.2.3.4 --pod-infra-container-image=a.b/c/d:1 --image-gc-high-threshold=80"\n'
            "ExecStart=/usr/bin/x --sidecar-image e.f/g:2 --v=2\n")
    refs = egress.flag_references(text, "h", "/etc/x")
    assert [(r.ref, r.flag) for r in refs] == [("a.b/c/d:1", "--pod-infra-container-image"),
                                               ("e.f/g:2", "--sidecar-image")]


def test_invalid_yaml_and_missing_image_are_problems():
    files = {"h1": {"/etc/kubernetes/addons/bad.yaml": File(b"kind: [\n"),
                    "/etc/kubernetes/addons/noimg.yaml": File(b"kind: Pod\nmetadata: {name: p}\n"
                                                              b"spec: {containers: [{name: c}]}\n")}}
    lines = [p.line() for p in egress.scan(files, ENDPOINT, BUNDLE).problems]
    assert any(ln.startswith("h1:/etc/kubernetes/addons/bad.yaml: not valid YAML") for ln in lines)
    assert "h1:/etc/kubernetes/addons/noimg.yaml Pod p container c: no image reference" in lines


def test_bundle_images_from_the_oci_layout_name_what_seeding_pushes(tmp_path):
    digests = L.build_layout(tmp_path)
    bundle = egress.bundle_images(tmp_path, ENDPOINT, "kubernetes", "last-component")
    assert {b.ref: b.digest for b in bundle} == {
        f"{ENDPOINT}/kubernetes/pause-amd64:3.1": digests[L.PAUSE],
        f"{ENDPOINT}/kubernetes/etcd-amd64:3.1.12": digests[L.ETCD],
        f"{ENDPOINT}/kubernetes/coredns:1.1.3": digests[L.COREDNS],
    }
    files = {"h4": {"/etc/kubernetes/kubelet": File(f'A="--pod-infra-container-image={ENDPOINT}/kubernetes/'
                                                    f'pause-amd64:3.1"\n'.encode())},
             "h5": {"/etc/kubernetes/kubelet": File(f'A="--pod-infra-container-image={ENDPOINT}/kubernetes/'
                                                    f'pause-amd64@{digests[L.PAUSE]}"\n'.encode())}}
    assert egress.scan(files, ENDPOINT, bundle).ok  # by tag and by digest


def test_check_without_an_unpacked_bundle_fails_clearly(inv, tmp_path):
    (r,) = egress.egress_results(inv, tmp_path, session=None)
    assert not r.ok and r.name == egress.CHECK_NAME and "no unpacked bundle" in r.detail


def test_check_reads_the_unpacked_bundle_and_asks_the_registry(inv, tmp_path, monkeypatch):
    """egress_results: bundle dir from the state's bundle.json, roles from its spec, manifests rendered."""
    import json
    import shutil

    from installer import checks

    bundle = tmp_path / "bundle-x"
    digests = L.build_layout(bundle / "images")
    (bundle / "bundle-spec.yaml").write_text(yaml.safe_dump({
        "images": [{"ref": L.PAUSE, "role": "pause"}, {"ref": L.COREDNS, "role": "coredns"}],
        "registry": {"naming": "last-component"}}))
    (bundle / "manifests").mkdir()
    shutil.copy(ROOT / "manifests" / "coredns.yaml.j2", bundle / "manifests")
    (tmp_path / "bundle.json").write_text(json.dumps({"dir": str(bundle)}))
    served = {"kubernetes/pause-amd64": {"3.1": digests[L.PAUSE]}, "kubernetes/coredns": {"1.1.3": "sha256:" + "1" * 64}}
    monkeypatch.setattr(checks, "registry_client", lambda inv, session, **kw: FakeRegistry(served))
    cdns = inv.model_copy(update={"cluster": inv.cluster.model_copy(update={"dns_addon": "coredns"})})
    (r,) = egress.egress_results(cdns, tmp_path, session=None)
    assert not r.ok and r.target == "h1:/etc/kubernetes/addons/coredns.yaml Deployment kube-system/coredns " \
                                    "container coredns"
    assert r.detail.startswith(f"{ENDPOINT}/kubernetes/coredns:1.1.3: the site registry serves sha256:111")
    served["kubernetes/coredns"]["1.1.3"] = digests[L.COREDNS]
    (r,) = egress.egress_results(cdns, tmp_path, session=None)
    assert r.ok and "2 image(s) in 3 place(s)" in r.detail, r.detail


def test_the_same_manifest_on_many_hosts_is_parsed_once_and_named_per_host(monkeypatch):
    pod = b"kind: Pod\nmetadata: {name: p, namespace: kube-system}\nspec: {containers: [{name: c, image: x/y:1}]}\n"
    files = {f"h{i}": {"/etc/kubernetes/manifests/p.yaml": File(pod), "/etc/kubernetes/bad.yaml": File(b"kind: [\n")}
             for i in range(1, 4)}
    parses = []
    real = egress.manifest_references
    monkeypatch.setattr(egress, "manifest_references", lambda text, host, path: parses.append(text) or
                        real(text, host, path))
    refs, problems = egress.references(files)
    assert len(parses) == 2  # one valid manifest, one invalid: each parsed once for the three hosts
    assert [(r.host, r.path, r.ref, r.obj, r.container) for r in refs] == [
        (f"h{i}", "/etc/kubernetes/manifests/p.yaml", "x/y:1", "Pod kube-system/p", "container c") for i in range(1, 4)]
    assert [p.line().split(": ")[0] for p in problems] == [f"h{i}:/etc/kubernetes/bad.yaml" for i in range(1, 4)]
