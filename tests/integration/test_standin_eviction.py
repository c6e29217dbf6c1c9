"""The stand-in apiserver: pods/eviction (what the installer's drain uses), and keep-alive after early answers."""

from __future__ import annotations

import pytest
import requests

from tests.integration.test_standin_addons import env  # noqa: F401  (the module's running apiserver + etcd)

pytestmark = pytest.mark.integration


def test_an_eviction_deletes_the_pod_and_an_early_answer_leaves_the_connection_usable(env):  # noqa: F811
    s = requests.Session()
    kw = {"cert": env["admin"], "verify": env["pki"].ca, "timeout": 10}
    base = env["server"] + "/api/v1/namespaces/default/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evict-me", "namespace": "default"},
           "spec": {"nodeName": "n1", "containers": [{"name": "m", "image": "x"}]}}
    assert s.post(base, json=pod, **kw).status_code == 201
    body = {"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "evict-me", "namespace": "default"}}
    r = s.post(f"{base}/evict-me/eviction", json=body, **kw)
    assert r.status_code == 201 and r.json()["status"] == "Success", r.text
    assert s.get(f"{base}/evict-me", **kw).status_code == 404
    assert s.post(f"{base}/evict-me/eviction", json=body, **kw).status_code == 404  # gone already
    assert s.put(f"{base}/evict-me/eviction", json=body, **kw).status_code == 405  # only create
    # a POST with a body answered before it was parsed (no such resource), then the same connection again
    assert s.post(env["server"] + "/api/v1/nosuchthing/a/b/c", json=body, **kw).status_code == 404
    assert s.get(base, **kw).status_code == 200
