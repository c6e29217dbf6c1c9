"""Both CLIs: --help everywhere, --version, errors printed without tracebacks, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, cwd=ROOT):
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("prog", ["bundler", "installer"])
def test_version_and_help(prog):
    r = run(prog, "--version")
    assert r.returncode == 0 and r.stdout.startswith(f"{prog} 0.")
    r = run(prog, "--help")
    assert r.returncode == 0 and "validate" in r.stdout


def test_validate_ok_json():
    r = run("bundler", "validate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "k8s"
    r = run("installer", "validate", "inventory.example.yaml", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["hosts"]) == 5


def test_bad_spec_exit_2_no_traceback(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: k8s\nversion: 1\nbinaries: []\nrpms: {repos: [], packages: []}\nimages: [{ref: 'A:b'}]\n")
    r = run("bundler", "validate", str(p))
    assert r.returncode == 2
    assert "images[0].ref (line 5): not a valid image reference" in r.stderr
    assert "Traceback" not in r.stderr and "hint:" in r.stderr


def test_missing_inventory_is_an_error_not_a_traceback(tmp_path):
    r = run("installer", "validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 1 and "inventory not found" in r.stderr and "Traceback" not in r.stderr
    r = run("installer", "--debug", "validate", str(tmp_path / "nope.yaml"))
    assert "Traceback" in r.stderr


def test_render_and_certs_check(tmp_path):
    out, state = tmp_path / "out", tmp_path / "state"
    r = run("installer", "render", "-i", "inventory.example.yaml", "--out", str(out), "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["files"] > 100 and (out / "k8s-master1" / "etc/etcd/etcd.conf").is_file()
    r = run("installer", "certs", "check", "-i", "inventory.example.yaml", "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    rows = {c["name"]: c for c in json.loads(r.stdout)}
    assert rows["ca"]["status"] == "ok" and all(c["days_left"] > 300 for c in rows.values())
    # a new VIP: the check flags the apiserver certificate, a re-render reissues it
    inv = (ROOT / "inventory.example.yaml").read_text().replace("192.168.10.100", "192.168.10.101")
    (tmp_path / "inv.yaml").write_text(inv)
    r = run("installer", "certs", "check", "-i", str(tmp_path / "inv.yaml"), "--state", str(state), "--json")
    assert r.returncode == 1 and "need attention" in r.stderr
    bad = [c["name"] for c in json.loads(r.stdout) if c["status"] != "ok"]
    assert bad and all("apiserver" in n or "kubeconfig" in n or "admin" in n for n in bad), bad


# ---- signing keys: Ed25519 and the P-256 pair for openssl 1.0.2 ---------------------------------------


def test_keygen_writes_both_pairs_and_never_overwrites(tmp_path):
    import stat

    keys = tmp_path / "keys"
    r = run("bundler", "keygen", "--out", str(keys), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(p.name for p in keys.iterdir()) == ["bundle-p256.key", "bundle-p256.pub", "bundle.key",
                                                      "bundle.pub"]
    assert {stat.S_IMODE((keys / n).stat().st_mode) for n in ("bundle.key", "bundle-p256.key")} == {0o600}
    assert d["p256_public_key"] == str(keys / "bundle-p256.pub") and d["p256_private_key"].endswith("p256.key")
    assert d["fingerprint"].startswith("SHA256:") and d["fingerprint_p256"].startswith("SHA256:")
    assert d["fingerprint"] != d["fingerprint_p256"]
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    r = run("bundler", "keygen", "--out", str(keys))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before

    half = tmp_path / "half"  # one of the four already there: nothing new is written
    half.mkdir()
    (half / "bundle-p256.pub").write_text("someone else's")
    r = run("bundler", "keygen", "--out", str(half))
    assert r.returncode == 1 and "bundle-p256.pub" in r.stderr
    assert [p.name for p in half.iterdir()] == ["bundle-p256.pub"]

    r = run("bundler", "keygen", "--out", str(tmp_path / "text"))
    assert r.returncode == 0 and "Ed25519, fingerprint SHA256:" in r.stdout
    assert "ECDSA P-256" in r.stdout and "bundle-p256.pub" in r.stdout


@pytest.mark.parametrize("case", ["wrong-type", "missing", "garbage", "public", "bad-beside"])
def test_build_refuses_a_bad_p256_key_before_any_download(tmp_path, case):
    from contract.bundle import generate_keypair, generate_keys

    keys = generate_keys(tmp_path / "keys")
    old = generate_keypair(tmp_path / "old")  # a key directory without the P-256 pair
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    key, p256 = {"wrong-type": (keys.key, keys.key), "missing": (keys.key, tmp_path / "nope.key"),
                 "garbage": (keys.key, junk), "public": (keys.key, keys.p256_pub),
                 "bad-beside": (old[0], None)}[case]
    if case == "bad-beside":
        (tmp_path / "old" / "bundle-p256.key").write_text("not a key")
    spec = tmp_path / "bundle-spec.yaml"
    spec.write_bytes((ROOT / "bundle-spec.yaml").read_bytes())
    # --locked without a lock fails right after the keys are loaded, so a key check that let a bad key
    # through would show as "no lockfile" (and nothing is ever downloaded)
    args = ["bundler", "build", "--spec", str(spec), "--key", str(key), "--out", str(tmp_path / "dist"),
            "--cache", str(tmp_path / "cache"), "--locked", "--no-static"]
    r = run(*args, *(["--p256-key", str(p256)] if p256 else []))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "no lockfile" not in r.stderr and "hint:" in r.stderr
    assert {"wrong-type": "Ed25519", "missing": "does not exist", "garbage": "not a PEM private key",
            "public": "holds a public key", "bad-beside": "bundle-p256.key"}[case] in r.stderr
    assert not (tmp_path / "dist").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # (the CLI makes the empty cache)


def test_signing_keys_of_old_and_new_key_directories(tmp_path):
    from bundler import build
    from contract.bundle import fingerprint, generate_keypair, generate_keys

    old = build.load_signing_keys(generate_keypair(tmp_path / "old")[0])
    assert old.p256_key is None and old.p256_path is None
    keys = generate_keys(tmp_path / "new")
    new = build.load_signing_keys(keys.key)
    assert new.p256_path == keys.p256_key and fingerprint(new.p256_key.public_key()).startswith("SHA256:")
    explicit = build.load_signing_keys(tmp_path / "old" / "bundle.key", keys.p256_key)
    assert explicit.p256_path == keys.p256_key


def test_build_summary_says_which_keys_signed(tmp_path):
    from bundler import build, cli

    s = build.BuildSummary(bundle=tmp_path / "b", parts=[], name="k8s", version="1", files=1, bytes=1,
                           compressed_bytes=1, downloaded_bytes=0, cache_hits=0, artifacts={}, lock_path=tmp_path,
                           lock_written=False, fingerprint="SHA256:ed")
    d = s.as_dict()
    assert d["signatures"] == ["manifest.sig"] and d["fingerprint_p256"] is None
    assert "Ed25519 signature only" in cli._build_text(d) and "keygen" in cli._build_text(d)
    s.fingerprint_p256, s.p256_key = "SHA256:p", tmp_path / "bundle-p256.key"
    d = s.as_dict()
    assert d["signatures"] == ["manifest.sig", "manifest.sig.p256"] and d["fingerprint_p256"] == "SHA256:p"
    assert d["p256_key"] == str(tmp_path / "bundle-p256.key")
    text = cli._build_text(d)
    assert "signer SHA256:ed (Ed25519)" in text and "P-256 SHA256:p" in text and "openssl 1.0.2" in text


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A bundle signed with both keys, one with Ed25519 only, and the key files."""
    import hashlib

    from contract.bundle import Entry, generate_keys, load_p256_private_key, load_private_key, write_bundle
    from tests.typed_contents import typed

    d = tmp_path_factory.mktemp("signed")
    keys = generate_keys(d / "keys")
    src = d / "f"
    src.write_bytes(b"kubelet")
    entries = [Entry("binaries/kubelet", src, 7, hashlib.sha256(b"kubelet").hexdigest(), 0o755)]
    kw = dict(spec_sha256="0" * 64, lock_sha256="1" * 64, **typed({"binary/kubernetes-server": "1.10.3"}))
    key = load_private_key(keys.key)
    dual = write_bundle(d / "dual", "k8s", "1.10.3", entries, key, p256_key=load_p256_private_key(keys.p256_key),
                        **kw)
    only = write_bundle(d / "only", "k8s", "1.10.3", entries, key, **kw)
    return {"dual": dual, "only": only, "keys": keys}


@pytest.mark.parametrize("prog", ["installer", "bundler"])
def test_verify_with_either_public_key(signed, prog):
    dual, keys = signed["dual"], signed["keys"]
    r = run(prog, "verify", str(dual.path), "--pub", str(keys.pub), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["fingerprint"] == dual.fingerprint and d["key_type"] == "Ed25519"
    assert d["signatures_checked"] == ["manifest.sig", "manifest.sig.p256"] and d["signatures_not_checked"] == []
    r = run(prog, "verify", str(dual.path), "--pub", str(keys.p256_pub), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["fingerprint"] == dual.fingerprint_p256 and d["key_type"] == "P-256"
    assert d["signatures_checked"] == ["manifest.sig.p256"] and d["signatures_not_checked"] == ["manifest.sig"]
    r = run(prog, "verify", str(dual.path), "--pub", str(keys.p256_pub))
    assert r.returncode == 0 and ": OK: k8s 1.10.3" in r.stdout
    assert f"signed by {dual.fingerprint_p256} (P-256: manifest.sig.p256)" in r.stdout
    assert "manifest.sig (Ed25519) not checked: no Ed25519 key given" in r.stdout


def test_bundler_verify_is_installer_verify(signed, tmp_path):
    """bundler declares its own `verify` (it imports nothing of the installer) with the installer's body: the same
    help, output, JSON and refusals, for a whole bundle and for one part of a split one."""
    import hashlib

    from contract.bundle import Entry, load_private_key, write_bundle

    keys = signed["keys"]
    helps = {prog: run(prog, "verify", "--help") for prog in ("installer", "bundler")}
    assert all(r.returncode == 0 for r in helps.values())
    words = {prog: " ".join(r.stdout.replace(f"{prog} verify", "PROG verify").split()) for prog, r in helps.items()}
    assert words["bundler"] == words["installer"]
    assert "(.partNNN: that part alone" in helps["installer"].stdout and "--pub" in helps["installer"].stdout
    src = tmp_path / "kubelet"
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(3000))  # 96 KB, incompressible
    src.write_bytes(data)
    split = write_bundle(tmp_path / "split", "k8s", "1.10.3",
                         [Entry("binaries/kubelet", src, len(data), hashlib.sha256(data).hexdigest(), 0o755)],
                         load_private_key(keys.key), spec_sha256="0" * 64, lock_sha256="1" * 64, components={},
                         split_size="16KiB", level=1)
    assert len(split.parts) > 1
    cases = [[str(signed["dual"].path), "--pub", str(keys.p256_pub)],
             [str(signed["dual"].path), "--pub", str(keys.pub), "--json"],
             [str(split.path), "--pub", str(keys.pub)],
             [str(split.parts[1]), "--pub", str(keys.pub)],
             [str(split.parts[1]), "--pub", str(keys.pub), "--json"],
             [str(signed["only"].path), "--pub", str(keys.p256_pub)],
             [str(signed["dual"].path), "--pub", str(keys.p256_key), "--json"]]
    for args in cases:
        i, b = run("installer", "verify", *args), run("bundler", "verify", *args)
        assert (b.returncode, b.stdout, b.stderr) == (i.returncode, i.stdout, i.stderr), args
    assert "OK: part 2 of" in run("bundler", "verify", *cases[3]).stdout
    assert run("bundler", "verify", *cases[5]).returncode == 1


def test_unpack_with_the_p256_key_and_refusals(signed, tmp_path):
    keys = signed["keys"]
    r = run("installer", "unpack", str(signed["dual"].path), "--pub", str(keys.p256_pub), "--dest",
            str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "binaries" / "kubelet").read_bytes() == b"kubelet"
    r = run("installer", "unpack", str(signed["only"].path), "--pub", str(keys.p256_pub), "--dest",
            str(tmp_path / "site2"))
    assert r.returncode == 1 and "carries only an Ed25519 signature" in r.stderr and "bundle.pub" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "site2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    r = run("installer", "verify", str(signed["dual"].path), "--pub", str(keys.p256_key))
    assert r.returncode == 1 and "holds a private key" in r.stderr and "Traceback" not in r.stderr


def test_inspect_shows_both_signers(signed):
    dual, keys = signed["dual"], signed["keys"]
    r = run("bundler", "inspect", str(dual.path), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["signer"] == dual.fingerprint and d["signer_p256"] == dual.fingerprint_p256
    assert d["signatures"] == ["manifest.sig", "manifest.sig.p256"]
    text = run("bundler", "inspect", str(dual.path)).stdout
    assert f"signed by {dual.fingerprint} (Ed25519, manifest.sig) and {dual.fingerprint_p256} (P-256" in text
    assert "not verified: pass --pub" in text
    text = run("bundler", "inspect", str(dual.path), "--pub", str(keys.p256_pub)).stdout
    assert f"verified with the P-256 key {dual.fingerprint_p256}: manifest.sig.p256; not checked" in text
    only = json.loads(run("bundler", "inspect", str(signed["only"].path), "--json").stdout)
    assert only["signer_p256"] is None and only["signatures"] == ["manifest.sig"]
