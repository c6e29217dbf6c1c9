"""Every rendered addon object (both DNS choices) is valid against the Kubernetes 1.10 OpenAPI schemas, strictly
(unknown fields are errors, as `kubectl apply --validate` makes them), using PyPI kubernetes-validate 1.12.0."""

import importlib.resources
import sys
import types
import warnings
from pathlib import Path

import pytest
import yaml

from installer import addons, inventory

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.10.0"
IMAGES = {r: f"harbor.example.com/kubernetes/{r}:x" for r in
          ("kube-dns", "dnsmasq", "dns-sidecar", "coredns", "dashboard", "heapster", "metrics-server", "pause")}


def _kubernetes_validate():
    """The real package. Its 1.12.0 release locates its bundled schemas with pkg_resources, which setuptools 81+
    no longer ships: when that import fails, provide the two functions it calls from importlib.resources."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def _path(package, resource):
            return importlib.resources.files(package).joinpath(resource.lstrip("/"))

        shim.resource_listdir = lambda package, resource: [p.name for p in _path(package, resource).iterdir()]
        shim.resource_filename = lambda package, resource: str(_path(package, resource))
        sys.modules["pkg_resources"] = shim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # distutils.version in the package
        import kubernetes_validate
    return kubernetes_validate


kv = _kubernetes_validate()


def validate(obj):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # distutils.version, jsonschema.RefResolver
        kv.validate(obj, K8S_VERSION, strict=True)


def _site(dns_addon):
    inv = inventory.load(ROOT / "inventory.example.yaml")
    return inv.model_copy(update={"cluster": inv.cluster.model_copy(update={"dns_addon": dns_addon})})


def _objects():
    seen = set()
    for dns in ("kube-dns", "coredns"):
        for name, text in sorted(addons.render(ROOT / "manifests", _site(dns), IMAGES).items()):
            for i, doc in enumerate(yaml.safe_load_all(text)):
                if doc is None:
                    continue
                ident = (name, i)
                if ident not in seen:
                    seen.add(ident)
                    yield pytest.param(doc, id="%s#%d-%s-%s" % (name, i, doc.get("kind"),
                                                                (doc.get("metadata") or {}).get("name")))


OBJECTS = list(_objects())


def test_every_addon_and_both_dns_choices_are_covered():
    files = {p.id.split("#")[0] for p in OBJECTS}
    assert files == {"kube-dns.yaml", "coredns.yaml", "dashboard.yaml", "metrics-server.yaml"}
    kinds = {p.values[0]["kind"] for p in OBJECTS}
    assert {"Deployment", "Service", "ServiceAccount", "APIService", "ClusterRoleBinding"} <= kinds


def test_validator_is_strict_and_knows_1_10():
    """The check must be able to fail: an unknown field and a wrong type are both rejected."""
    good = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "namespace": "kube-system"}}
    validate(good)
    with pytest.raises(kv.ValidationError, match="Additional properties"):
        validate(dict(good, secretz=[]))
    with pytest.raises(kv.ValidationError):
        validate({**good, "metadata": {"name": 5}})
    # apps/v1beta2 Deployment exists in 1.10, and its spec.selector is required there.
    dep = {"apiVersion": "apps/v1beta2", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kv.ValidationError, match="selector"):
        validate(dep)


@pytest.mark.parametrize("obj", OBJECTS)
def test_addon_object_matches_kubernetes_1_10_schema(obj):
    try:
        validate(obj)
    except kv.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        pytest.fail("%s %s: %s: %s" % (obj["kind"], obj["metadata"].get("name"), where, e.message))
    except kv.SchemaNotFoundError as e:
        pytest.fail(e.message)


# ------------------------------------------------------------------ the stand-in kubectl reads them as PyYAML does


def _rendered_texts():
    for dns in ("kube-dns", "coredns"):
        for name, text in sorted(addons.render(ROOT / "manifests", _site(dns), IMAGES).items()):
            yield pytest.param(text, id="%s-%s" % (dns, name))


@pytest.mark.parametrize("text", list(_rendered_texts()))
def test_standin_yaml_reader_reads_every_rendered_manifest_like_pyyaml(text):
    from tests.fixtures.standins import _runtime as rt

    assert rt.parse_yaml_documents(text) == [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize("text", [
    "a: |\n  x\n\n  y\n\n\nb: 1\n",
    "a: >\n  folded\n  line\n\n  para\n    more indented\n  w\n",
    "- |-\n  t\n- >+\n  u\n\n",
    "- k: |\n    line1\n     line2\n  j: 2\n",
    "a: |\n  # kept, not a comment\n  b: c\n",
    "a: |\nb: 1\n",
    "args: [\"-v=2\",\n  'it''s', \"q]\", {x: y},\n  \"--server=/a/127.0.0.1#10053\"]  # trailing comment\n",
    "--- {a: 1}\n---\n# only a comment\n---\nb: [1, 2]\n...\n",
    "kind: ConfigMap\ndata:\n  Corefile: |\n    .:53 {\n        errors\n    }\n  other: \"x\"\n",
])
def test_standin_yaml_reader_block_scalars_flow_and_documents(text):
    from tests.fixtures.standins import _runtime as rt

    assert rt.parse_yaml_documents(text) == [d for d in yaml.safe_load_all(text) if d is not None]
