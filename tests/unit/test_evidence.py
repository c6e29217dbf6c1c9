"""The evidence report says where the bundle's artifacts were trusted from."""

from installer.apply import evidence_text, trust_summary

COMPONENTS = {
    "binary/etcd": "3.3.1",
    "repo/base": "key 6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5; repomd unsigned",
    "repo/local": "gpgcheck off",
    "trust/binary/etcd": "sha256 pin: upstream",
    "trust/binary/flannel": "sha256 pin: first-seen",
    "trust/rpm/haproxy": "signed by 6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5",
    "trust/rpm/tool": "signature unchecked (gpgcheck: false)",
}


def test_trust_summary_and_text():
    t = trust_summary(COMPONENTS)
    assert t["gpgcheck_off"] == ["local"] and t["unchecked_rpms"] == ["rpm/tool"]
    assert t["first_seen_binaries"] == ["binary/flannel"] and t["signed_rpms"] == 1
    report = {"bundle": {"name": "k8s", "version": "1.10.3", "manifest_sha256": "0" * 64,
                         "signer_fingerprint": "SHA256:x", "verified": "all", "reused_unpacked": False},
              "pki": [], "trust": t, "seed": None, "nothing_to_do": True, "changed": {}, "skipped": [],
              "deferred": [], "checks": None, "seconds": 1.0}
    text = evidence_text(report)
    assert "repo base: key 6341" in text and "WARNING: repos with gpgcheck off in the spec: local" in text
    assert "rpm/tool" in text and "pinned when first seen" in text and "binary/flannel" in text


def test_no_trust_lines_for_a_bundle_without_rpms():
    t = trust_summary({"binary/etcd": "3.3.1"})
    assert t == {"repos": {}, "gpgcheck_off": [], "unchecked_rpms": [], "first_seen_binaries": [], "signed_rpms": 0}
