"""`installer render -b BUNDLE --pub PUB` writes exactly the files apply writes (the desired state's files),
gpgcheck=1 with the bundle's keys included; it writes nothing to the state directory but the PKI. Without a
bundle it still renders, and names the files that are previews (they depend on the bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from contract.bundle import generate_keypair, layout
from installer import cli
from installer import inventory as inventory_mod
from installer import render as render_mod
from installer import site as site_mod
from tests.fixtures.harbor import layout as oci_layout
from tests.unit.test_plan_readonly import INV, TARBALLS, _tar, signed_bundle

KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQENBFake\n-----END PGP PUBLIC KEY BLOCK-----\n"
REPO_FILE = "/etc/yum.repos.d/k8s-offline.repo"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """The small signed bundle of test_plan_readonly (tarballs, spec, image layout), plus a pinned rpm key and
    a repository file, split into parts; and its inventory."""
    d = tmp_path_factory.mktemp("render-bundle")
    files = {f"binaries/{n}": _tar(m) for n, m in TARBALLS.items()}
    files["bundle-spec.yaml"] = b"name: k8s\nimages: [{ref: 'k8s.gcr.io/pause-amd64:3.1', role: pause}]\n"
    files[layout.rpm_key_path("base")] = KEY
    files[layout.rpm_path("repodata/repomd.xml")] = b"<repomd/>\n"
    oci_layout.build_layout(d / "src" / "images", big_layer_size=1000)
    files.update({p.relative_to(d / "src").as_posix(): p.read_bytes()
                  for p in sorted((d / "src" / "images").rglob("*")) if p.is_file()})
    res = signed_bundle(d, files, split_size="64KiB")
    assert res.parts, "the fixture is meant to be split"
    inv = d / "inventory.yaml"
    inv.write_text(yaml.safe_dump(INV))
    return {"bundle": res.parts[0], "pub": d / "keys" / "bundle.pub", "inventory": inv}


def tree(root: Path) -> dict:
    """{host: {absolute path: (bytes, mode)}} of a render output."""
    out: dict = {}
    for host in sorted(p for p in root.iterdir() if p.is_dir()):
        for p in sorted(host.rglob("*")):
            if p.is_file():
                out.setdefault(host.name, {})["/" + p.relative_to(host).as_posix()] = (p.read_bytes(),
                                                                                       p.stat().st_mode & 0o7777)
    return out


def names(root: Path) -> list:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def render(signed, state: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli.app, ["render", "-i", str(signed["inventory"]), "--out", str(out), "--state",
                                        str(state), *extra])


def test_render_with_the_bundle_writes_exactly_the_desired_files(signed, tmp_path) -> None:
    state, out, plain = tmp_path / "state", tmp_path / "out", tmp_path / "plain-state"
    assert render(signed, plain, tmp_path / "plain-out").exit_code == 0  # what render without a bundle keeps
    r = render(signed, state, out, "-b", str(signed["bundle"]), "--pub", str(signed["pub"]), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["previews"] == {} and d["bundle"] == str(signed["bundle"])
    n1 = inventory_mod.load(signed["inventory"]).host("n1")
    assert sorted(d["not_written"]["n1"]["binaries"]) == sorted(render_mod.binaries_for(n1))
    # render wrote the PKI and nothing else of what apply keeps (no unpacked bundle, no executables)
    assert names(state) == names(plain)
    got = tree(out)
    # what apply would write, loaded as apply loads it, on the state directory render just made
    site = site_mod.load_site(signed["inventory"], signed["bundle"], signed["pub"], state, lambda line: None)
    want = {h: {p: (f.content, f.mode) for p, f in desired.files.items()} for h, desired in site.desired.items()}
    assert set(got) == set(want)
    for host in want:
        assert sorted(got[host]) == sorted(want[host]), host
        for path in want[host]:
            assert got[host][path] == want[host][path], (host, path)  # bytes and mode
    repo = got["m1"][REPO_FILE][0].decode()
    assert "\ngpgcheck=1\n" in repo and "\ngpgcheck=0\n" not in repo
    assert "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-k8s-offline-base" in repo
    assert got["n1"]["/etc/pki/rpm-gpg/RPM-GPG-KEY-k8s-offline-base"][0] == KEY


def test_render_without_the_bundle_names_its_previews(signed, tmp_path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    r = render(signed, state, out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["bundle"] is None and d["not_written"] == {}
    for host in ("m1", "n1"):
        assert REPO_FILE in d["previews"][host]
    assert "/etc/kubernetes/kubelet" in d["previews"]["n1"]  # the pause image's name comes from the bundle
    assert "/etc/hosts" not in d["previews"]["m1"]
    assert "\ngpgcheck=0\n" in (out / "m1" / REPO_FILE.lstrip("/")).read_text()
    text = render(signed, state, tmp_path / "out2")
    assert text.exit_code == 0
    assert "render: preview:" in text.stderr and REPO_FILE in text.stderr and "not rendered without the bundle" \
        in text.stderr
    assert "render: preview:" not in text.stdout


def test_render_bundle_and_pub_go_together(signed, tmp_path) -> None:
    r = render(signed, tmp_path / "state", tmp_path / "out", "-b", str(signed["bundle"]))
    assert r.exit_code != 0 and "--bundle and --pub go together" in r.output
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def test_render_with_a_bad_bundle_writes_no_tree(signed, tmp_path) -> None:
    other = tmp_path / "keys"
    generate_keypair(other)
    r = render(signed, tmp_path / "state", tmp_path / "out", "-b", str(signed["bundle"]), "--pub",
               str(other / "bundle.pub"))
    assert r.exit_code != 0 and "does not verify" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
    assert not any(n.startswith(("bundle", "binaries")) for n in names(tmp_path / "state"))
