"""The evidence report says where the bundle's artifacts were trusted from: from the typed trust section alone."""

from dataclasses import replace

from contract.bundle.contents import FINDING_TEXT, Check, SourceKind, TrustEntry
from installer.apply import evidence_text, trust_summary

FPR = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
TRUST = (
    TrustEntry(SourceKind.BINARY, "etcd", Check.UPSTREAM_DIGEST, (), "sha256 from SHA256SUMS"),
    TrustEntry(SourceKind.BINARY, "flannel", Check.FIRST_SEEN, (), "no digest upstream"),
    TrustEntry(SourceKind.RPM, "haproxy", Check.GPG_SIGNED, (FPR,), "signed"),
    TrustEntry(SourceKind.RPM, "tool", Check.UNCHECKED, (), "repo local has gpgcheck: false"),
    TrustEntry(SourceKind.RPM_REPO, "base", Check.GPG_SIGNED, (FPR,), "the CentOS key"),
    TrustEntry(SourceKind.RPM_REPODATA, "base", Check.UNSIGNED, (), "no repomd.xml.asc"),
    TrustEntry(SourceKind.RPM_REPO, "local", Check.UNCHECKED, (), "gpgcheck: false"),
    TrustEntry(SourceKind.RPM_REPODATA, "local", Check.UNCHECKED, (), "gpgcheck: false"),
)


def report(t: dict) -> dict:
    return {"bundle": {"name": "k8s", "version": "1.10.3", "manifest_sha256": "0" * 64,
                       "signer_fingerprint": "SHA256:x", "verified": "all", "reused_unpacked": False},
            "pki": [], "trust": t, "seed": None, "nothing_to_do": True, "changed": {}, "skipped": [],
            "deferred": [], "checks": None, "seconds": 1.0}


def test_trust_summary_and_text():
    t = trust_summary(TRUST)
    assert t["gpgcheck_off"] == ["local"] and t["unchecked_rpms"] == ["rpm/tool"]
    assert t["first_seen_binaries"] == ["binary/flannel"] and t["signed_rpms"] == 1
    assert t["repos"] == {"base": f"key {FPR}; repomd unsigned", "local": "gpgcheck off"}
    assert t["sources"][2] == {"kind": "rpm", "name": "haproxy", "check": "gpg-signed", "keys": [FPR],
                               "detail": "signed"}
    text = evidence_text(report(t))
    assert "repo base: key 6341" in text
    assert (f"  WARNING: {FINDING_TEXT[Check.UNCHECKED]}: rpm/tool, rpm-repo/local, rpm-repodata/local"
            in text.splitlines())
    assert f"note: {FINDING_TEXT[Check.FIRST_SEEN]}: binary/flannel" in text
    assert "pinned when first seen" in text


def test_rewording_the_detail_drops_no_warning():
    """Readers branch on the check, never on the words: another detail (or none) gives the same report lines."""
    reworded = tuple(replace(t, detail="Ganz anders formuliert: signature unchecked? first-seen!") for t in TRUST)
    empty = tuple(replace(t, detail="") for t in TRUST)
    expected = evidence_text(report(trust_summary(TRUST)))
    assert expected.count("WARNING:") == 1
    for trust in (reworded, empty):
        t = trust_summary(trust)
        assert {k: v for k, v in t.items() if k != "sources"} == \
            {k: v for k, v in trust_summary(TRUST).items() if k != "sources"}
        assert evidence_text(report(t)) == expected
    # and a detail that reads like a warning makes none: only the check does
    calm = tuple(replace(t, check=Check.SPEC_PIN, keys=(), detail="signature unchecked (gpgcheck: false)")
                 if t.check in (Check.UNCHECKED, Check.FIRST_SEEN) else t for t in TRUST)
    assert "WARNING" not in evidence_text(report(trust_summary(calm)))


def test_unrecorded_checks_are_a_warning():
    t = trust_summary((TrustEntry(SourceKind.RPM, "old", Check.UNRECORDED, (), ""),))
    assert t["warnings"] == [f"{FINDING_TEXT[Check.UNRECORDED]}: rpm/old"]
    assert "WARNING: no check recorded" in evidence_text(report(t))


def test_no_trust_lines_for_a_bundle_without_rpms():
    t = trust_summary(())
    assert t == {"sources": [], "repos": {}, "gpgcheck_off": [], "unchecked_rpms": [], "first_seen_binaries": [],
                 "signed_rpms": 0, "warnings": [], "notes": []}
    text = evidence_text(report(t))
    assert "WARNING" not in text and "RPMs:" not in text and "note:" not in text
