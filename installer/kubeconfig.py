"""Kubeconfig documents with embedded (base64) CA, client certificate and key."""

from __future__ import annotations

import base64
import re

import yaml

PLACEHOLDER = "<redacted>"
_DATA_KEYS = ("certificate-authority-data", "client-certificate-data", "client-key-data")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build(*, cluster: str, server: str, user: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
    """One cluster, one user, one context; keys in a stable order so a re-render is byte-identical."""
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert_pem),
                                          "client-key-data": _b64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    # libyaml's emitter when present: the same bytes as yaml.safe_dump (tests/unit/test_libyaml.py), 15x
    # faster; every host's kubeconfigs are built on every run
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                     default_flow_style=False, width=1 << 20).encode()


def parse(content: bytes) -> dict:
    """The server, user and decoded PEM data of a kubeconfig written by build()."""
    doc = yaml.safe_load(content)
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]
    return {
        "server": cluster["server"],
        "user": user["name"],
        "ca_pem": base64.b64decode(cluster["certificate-authority-data"]),
        "cert_pem": base64.b64decode(user["user"]["client-certificate-data"]),
        "key_pem": base64.b64decode(user["user"]["client-key-data"]),
    }


def redact(content: bytes) -> bytes:
    """Replace embedded certificate and key data by a placeholder (golden files, logs)."""
    text = content.decode()
    for key in _DATA_KEYS:
        text = re.sub(rf"({key}: ).*", rf"\g<1>{PLACEHOLDER}", text)
    return text.encode()
