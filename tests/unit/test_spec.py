"""bundle-spec.yaml model: the default spec is valid; every mistake is reported at once with its path."""

import textwrap
from pathlib import Path

import pytest

from bundler import spec as spec_mod
from contract.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_default_spec_is_complete():
    s = spec_mod.load(ROOT / "bundle-spec.yaml")
    names = {b.name: b.version for b in s.selected_binaries()}
    assert names["kubernetes-server"] == "1.10.3"
    assert names["etcd"] == "3.3.1" and names["flannel"] == "0.10.0" and names["cni-plugins"] == "0.7.0"
    assert names["harbor-offline-installer"] == "1.4.0" and names["docker-compose"] == "1.18.0"
    assert "docker-static" not in names  # the RPM is the default, the tarball the alternative
    pkgs = {p.name: p.version for p in s.selected_packages()}
    assert pkgs["docker-ce"] == "18.09.1" and pkgs["docker-ce-cli"] == "18.09.1"
    assert {"haproxy", "keepalived", "socat", "conntrack-tools", "ipset", "ipvsadm", "chrony"} <= set(pkgs)
    refs = [i.ref for i in s.selected_images()]
    assert "k8s.gcr.io/pause-amd64:3.1" in refs
    assert not any("coredns" in r for r in refs)
    assert s.registry.project == "kubernetes"
    assert {r.name for r in s.rpms.repos} == {"base", "updates", "extras", "docker-ce-stable"}


def test_options_select_alternatives():
    s = spec_mod.load(ROOT / "bundle-spec.yaml")
    s2 = s.model_copy(update={"options": spec_mod.Options(dns="coredns", docker="static")})
    refs = [i.ref for i in s2.selected_images()]
    assert "docker.io/coredns/coredns:1.1.3" in refs and not any("kube-dns" in r for r in refs)
    assert "docker-static" in {b.name for b in s2.selected_binaries()}
    assert "docker-ce" not in {p.name for p in s2.selected_packages()}


def test_five_mistakes_five_located_errors(tmp_path):
    p = write(tmp_path, """\
        name: k8s
        version: 1.10.3
        binaries:
          - name: etcd
            version: 3.3.1
            url: ftp://example.org/etcd.tgz
            sha256: abc
        rpms:
          repos: [{name: base, baseurl: "http://mirror.centos.org/centos/7/os/x86_64/"}]
          packages: [{name: "docker ce"}]
        images:
          - {ref: "k8s.gcr.io/Pause:3.1"}
        registy: {project: kubernetes}
        """)
    with pytest.raises(ValidationError) as e:
        spec_mod.load(p)
    d = e.value.details
    assert len(d) == 5, d
    assert any(x.startswith("binaries[0].url (line 6)") for x in d)
    assert any(x.startswith("binaries[0].sha256 (line 7)") for x in d)
    assert any(x.startswith("rpms.packages[0].name") for x in d)
    assert any(x.startswith("images[0].ref (line 12): not a valid image reference") for x in d)
    assert any(x.startswith("registy (line 13): unknown key") and "did you mean 'registry'" in x for x in d)
    assert e.value.exit_code == 2 and e.value.hint


def test_cross_field_problems(tmp_path):
    p = write(tmp_path, """\
        name: k8s
        version: "1"
        binaries:
          - {name: etcd, version: 3.3.1, url: "https://e/x.tgz"}
          - {name: etcd, version: 3.3.2, url: "https://e/y.tgz"}
        rpms:
          base: [haproxy]
          repos:
            - {name: base, baseurl: "http://m/"}
            - {name: base, baseurl: "http://n/"}
          packages: [{name: haproxy}]
        images:
          - {ref: "k8s.gcr.io/pause:3.1"}
          - {ref: "k8s.gcr.io/pause:3.1"}
        """)
    with pytest.raises(ValidationError) as e:
        spec_mod.load(p)
    text = "\n".join(e.value.details)
    assert "binaries[1].name (line 5): duplicate binary 'etcd'" in text
    assert "rpms.repos[1].name" in text and "duplicate repo" in text
    assert "also in rpms.base" in text
    assert "images[1].ref" in text and "listed twice" in text


def test_not_yaml_and_not_found(tmp_path):
    p = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ValidationError, match="not valid YAML at line"):
        spec_mod.load(p)
    with pytest.raises(Exception, match="not found"):
        spec_mod.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("ref,registry,repo,tag", [
    ("k8s.gcr.io/pause-amd64:3.1", "k8s.gcr.io", "pause-amd64", "3.1"),
    ("coredns/coredns:1.1.3", "docker.io", "coredns/coredns", "1.1.3"),
    ("busybox", "docker.io", "library/busybox", "latest"),
    ("localhost:5000/a/b:c", "localhost:5000", "a/b", "c"),
    ("quay.io/coreos/flannel:v0.10.0-amd64", "quay.io", "coreos/flannel", "v0.10.0-amd64"),
])
def test_image_refs(ref, registry, repo, tag):
    r = spec_mod.parse_ref(ref)
    assert (r.registry, r.repository, r.tag) == (registry, repo, tag)


@pytest.mark.parametrize("bad", ["UPPER/case:1", "a//b", "x:", "a:b:c", "x@sha256:123"])
def test_bad_refs(bad):
    with pytest.raises(ValueError):
        spec_mod.parse_ref(bad)


def test_mirrors_longest_prefix_and_overlay(tmp_path):
    s = spec_mod.load(ROOT / "bundle-spec.yaml")
    m = tmp_path / "mirrors.yaml"
    m.write_text(textwrap.dedent("""\
        mirrors:
          urls:
            - {from: "https://dl.k8s.io/", to: "http://127.0.0.1:1/dl.k8s.io/"}
            - {from: "https://dl.k8s.io/v1.10.3/", to: "http://127.0.0.1:2/k/"}
          registries:
            - {from: "k8s.gcr.io", to: "127.0.0.1:5000/k8s.gcr.io", insecure: true}
        """))
    s2 = spec_mod.load(ROOT / "bundle-spec.yaml", mirrors=m)
    url, rule = s2.mirrors.url_for("https://dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64.tar.gz")
    assert url == "http://127.0.0.1:2/k/kubernetes-server-linux-amd64.tar.gz" and rule.to.endswith("/k/")
    assert s2.mirrors.url_for("https://dl.k8s.io/v1.9/x")[0] == "http://127.0.0.1:1/dl.k8s.io/v1.9/x"
    assert s2.mirrors.url_for("https://other/x") == ("https://other/x", None)
    name, rule = s2.mirrors.registry_for("k8s.gcr.io/pause-amd64")
    assert name == "127.0.0.1:5000/k8s.gcr.io/pause-amd64" and rule.insecure
    assert s2.mirrors.registry_for("k8s.gcr.iox/a")[1] is None
    assert s.mirrors.urls == ()


def test_bad_mirrors_file(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("mirrors:\n  urls:\n    - {from: nope, to: 'http://x/'}\n")
    with pytest.raises(ValidationError) as e:
        spec_mod.load(ROOT / "bundle-spec.yaml", mirrors=m)
    assert any(d.startswith("mirrors.urls[0].from") for d in e.value.details)
