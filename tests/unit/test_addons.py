"""Addon manifests render for the site: DNS choice, every image from the seeded registry, valid YAML."""

from pathlib import Path

import pytest
import yaml

from installer import addons, inventory
from installer.errors import Error

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {r: f"harbor.example.com/kubernetes/{r}:x" for r in
          ("kube-dns", "dnsmasq", "dns-sidecar", "coredns", "dashboard", "heapster", "metrics-server", "pause")}


def images_of(text):
    for doc in yaml.safe_load_all(text):
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            yield c["image"]


def test_kube_dns_site():
    inv = inventory.load(ROOT / "inventory.example.yaml")
    out = addons.render(ROOT / "manifests", inv, IMAGES)
    assert set(out) == {"kube-dns.yaml", "dashboard.yaml", "metrics-server.yaml"}
    imgs = [i for t in out.values() for i in images_of(t)]
    assert len(imgs) == 6 and all(i.startswith("harbor.example.com/kubernetes/") for i in imgs)
    assert "clusterIP: 10.254.0.10" in out["kube-dns.yaml"]
    assert "--domain=cluster.local." in out["kube-dns.yaml"]


def test_coredns_site_and_missing_image():
    inv = inventory.load(ROOT / "inventory.example.yaml")
    inv = inv.model_copy(update={"cluster": inv.cluster.model_copy(update={"dns_addon": "coredns"})})
    out = addons.render(ROOT / "manifests", inv, IMAGES)
    assert "coredns.yaml" in out and "kube-dns.yaml" not in out
    missing = {k: v for k, v in IMAGES.items() if k != "coredns"}
    with pytest.raises(Error, match="coredns.yaml.j2 needs a value"):
        addons.render(ROOT / "manifests", inv, missing)
