"""libyaml where every run pays for YAML: kubeconfig.build's emitter gives the pure-Python safe_dump's bytes (a
converged host's kubeconfigs still match and are not rewritten); the addon manifests' validity check still refuses
a manifest that is not YAML after rendering."""

from __future__ import annotations

import os

import pytest
import yaml

from contract.errors import Error
from installer import addons, kubeconfig
from installer import inventory as inventory_mod
from tests.unit.test_etcd_backup import ROOT


@pytest.mark.parametrize("user", ["admin", "system:node:k8s-node1", "system:kube-proxy", "x" * 200])
def test_build_is_byte_for_byte_the_pure_python_dump(user):
    ca, cert, key = os.urandom(1500), os.urandom(1300), os.urandom(1700)
    got = kubeconfig.build(cluster="c-1", server="https://198.18.0.100:8443", user=user, ca_pem=ca, cert_pem=cert,
                           key_pem=key)
    doc = yaml.safe_load(got)
    assert got == yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 20).encode()
    parsed = kubeconfig.parse(got)
    assert parsed["server"] == "https://198.18.0.100:8443"


def test_an_addon_that_is_not_yaml_after_rendering_is_refused(tmp_path):
    inv = inventory_mod.load(ROOT / "inventory.example.yaml")
    (tmp_path / "good.yaml.j2").write_text("kind: List\nitems: []\n---\nkind: Service\n")
    assert list(addons.render(tmp_path, inv, {})) == ["good.yaml"]
    (tmp_path / "bad.yaml.j2").write_text("kind: List\nitems: [unclosed\n")
    with pytest.raises(Error) as e:
        addons.render(tmp_path, inv, {})
    assert e.value.message.startswith("addon manifest bad.yaml.j2 is not valid YAML after rendering")
