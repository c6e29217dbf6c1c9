"""Delta bundles end to end against the stand-in upstreams: 1.10.3 built and unpacked as a site would, then the
1.10.4 patch release as a delta computed from the site's receipt (and from the old lock), combined on site with
the unpacked 1.10.3 into exactly the complete 1.10.4 bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler import build
from bundler.cache import Cache
from contract import bundle as fmt
from contract.bundle import layout
from contract.bundle.delta import BaseDir
from contract.errors import Error
from contract.receipt import Receipt
from installer import receipt as receipt_mod
from installer import site as site_mod
from installer.state import StateDir

pytestmark = pytest.mark.integration
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(upstreams, tmp_path_factory):
    t = tmp_path_factory.mktemp("delta")
    cache = Cache(t / "cache")  # shared by every build: a connected host's one cache
    fmt.generate_keypair(t / "keys")
    key, pub = t / "keys" / "bundle.key", t / "keys" / "bundle.pub"

    def spec_in(name: str, source: Path) -> Path:
        (t / name).mkdir()
        shutil.copyfile(source, t / name / "bundle-spec.yaml")  # the lock is written beside the spec
        return t / name / "bundle-spec.yaml"

    def run(spec: Path, out: str, **kw):
        return build.run_build(spec, upstreams.mirrors_file, key, t / out, cache, pythons=[PY],
                               include_static=False, progress=None, **kw)

    old_spec = spec_in("old", upstreams.dir / "bundle-spec.yaml")
    old = run(old_spec, "dist-old")
    # the site: the 1.10.3 bundle unpacked into the installer's state directory, as apply does it
    state = StateDir(t / "state").ensure()
    site_mod.prepare_bundle(old.bundle, pub, state, lambda line: None)
    bundles, notes = receipt_mod.bundle_part(state)
    receipt = t / "receipt.json"
    receipt.write_bytes(Receipt(created="2018-06-01T00:00:00Z", bundles=bundles).to_bytes())
    new_spec = spec_in("new", upstreams.spec_for("v1.10.4"))
    full = run(new_spec, "dist-full")
    delta = run(new_spec, "dist-delta", locked=True, since_path=receipt)
    by_lock = run(new_spec, "dist-lock", locked=True, since_path=old_spec.parent / "bundle-lock.yaml")
    return {"t": t, "pub": pub, "old": old, "full": full, "delta": delta, "by_lock": by_lock, "state": state,
            "base": Path(state.bundle_info()["dir"]), "notes": notes, "receipt": receipt}


def test_the_delta_carries_exactly_what_the_base_lacks(world) -> None:
    pub = fmt.load_public_key(world["pub"])
    full_m, _, _ = fmt.read_manifest(world["full"].bundle, pub)
    delta_m, _, _ = fmt.read_manifest(world["delta"].bundle, pub)
    old_m, _, _ = fmt.read_manifest(world["old"].bundle, pub)
    assert delta_m.to_bytes() == full_m.to_bytes()  # the complete 1.10.4 bundle's signed manifest
    assert world["notes"] == []
    base_has = {f.sha256 for f in old_m.files}
    lacking = {f.path for f in full_m.files if f.sha256 not in base_has}
    info = fmt.inspect_bundle(world["delta"].bundle, pub)
    assert info["delta"]["carried"]["files"] == len(lacking)
    assert info["delta"]["carried"]["bytes"] == sum(full_m.by_path()[p].size for p in lacking)
    # the patch release changes the kubernetes tarballs (and the metadata naming them), never an RPM
    assert "rpm" not in info["delta"]["carried"]["kinds"]
    assert layout.binary_path("kubernetes-server-linux-amd64.tar") in lacking
    assert world["delta"].delta["carried"]["files"] == len(lacking)
    assert world["delta"].compressed_bytes < world["full"].compressed_bytes / 2
    assert world["delta"].bundle.name == "k8s-1.10.4.delta-from-1.10.3.bundle.tar.zst"


def test_installer_unpack_combines_it_with_the_base_into_the_complete_bundle(world, tmp_path) -> None:
    pub = world["pub"]
    env_py = [sys.executable, "-m", "installer.cli"]

    def installer(*args):
        return subprocess.run([*env_py, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300)

    r = installer("unpack", world["delta"].bundle, "--pub", pub, "--dest", tmp_path / "combined",
                  "--base", world["base"], "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["delta"]["base_checked"] and d["delta"]["from_base_files"] > 0
    fmt.unpack_bundle(world["full"].bundle, fmt.load_public_key(pub), tmp_path / "full")
    assert _tree(tmp_path / "combined") == _tree(tmp_path / "full")

    r = installer("verify", world["delta"].bundle, "--pub", pub)
    assert r.returncode == 0, r.stderr
    assert "NOT checked (pass --base DIR" in r.stdout
    r = installer("unpack", world["delta"].bundle, "--pub", pub, "--dest", tmp_path / "nobase")
    assert r.returncode == 1 and "this is a delta bundle" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nobase").exists()
    r = installer("unpack", world["delta"].bundle, "--pub", pub, "--dest", tmp_path / "wrong",
                  "--base", tmp_path / "full")  # the 1.10.4 bundle is not its base
    assert r.returncode == 1 and "is another bundle" in r.stderr
    r = subprocess.run([sys.executable, "-m", "bundler.cli", "inspect", str(world["delta"].bundle)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "delta bundle: combined on site with its base k8s 1.10.3" in r.stdout


def test_a_delta_from_the_old_lock_combines_with_the_same_base(world, tmp_path) -> None:
    pub = fmt.load_public_key(world["pub"])
    info = fmt.inspect_bundle(world["by_lock"].bundle, pub)
    assert info["delta"]["base"]["manifest_sha256"] == ""  # named by its lock only
    fmt.unpack_bundle(world["by_lock"].bundle, pub, tmp_path / "c", base=BaseDir(world["base"]))
    fmt.unpack_bundle(world["full"].bundle, pub, tmp_path / "full")
    assert _tree(tmp_path / "c") == _tree(tmp_path / "full")


def test_apply_side_preparation_takes_the_base_from_the_state_directory(world, tmp_path) -> None:
    state = StateDir(tmp_path / "state").ensure()
    pub = world["pub"]
    with pytest.raises(Error, match="is a delta bundle for k8s 1.10.3 .* holds no unpacked bundle"):
        site_mod.prepare_bundle(world["delta"].bundle, pub, state, lambda line: None)
    site_mod.prepare_bundle(world["old"].bundle, pub, state, lambda line: None)
    old_dir = Path(state.bundle_info()["dir"])
    lines = []
    b = site_mod.prepare_bundle(world["delta"].bundle, pub, state, lines.append)
    assert (b.version, b.reused) == ("1.10.4", False)
    assert any("a delta: the files it does not carry come from" in line for line in lines)
    assert not old_dir.exists()  # the base is dropped once the combination verified
    assert BaseDir(b.dir).manifest_sha256 == b.digest
    again = site_mod.prepare_bundle(world["delta"].bundle, pub, state, lines.append)
    assert again.reused and again.dir == b.dir
    # the combined bundle is a base in turn: a receipt of this site names 1.10.4 with every file
    bundles, _ = receipt_mod.bundle_part(state)
    assert [(x.version, len(x.files)) for x in bundles] == [("1.10.4", b.files.__len__())]


def test_seed_pushes_a_deltas_images_with_its_base(world, tmp_path) -> None:
    """`installer seed DELTA --base DIR` seeds the combined bundle's images (a plain registry v2 here); without
    the base it is refused, saying so."""
    from tests.fixtures.harbor import registry as harbor_registry

    if not harbor_registry.available():
        pytest.skip("docker-registry/skopeo/htpasswd missing")

    def seed(*args):
        return subprocess.run([sys.executable, "-m", "installer.cli", "seed", *map(str, args)], capture_output=True,
                              text=True, cwd=ROOT, timeout=600)

    with harbor_registry.start_registry(tmp_path / "reg", tls=True, auth="none") as reg:
        args = [world["delta"].bundle, "--pub", world["pub"], "--registry", reg.endpoint, "--ca-file", reg.ca_file,
                "--json"]
        r = seed(*args)
        assert r.returncode == 1 and "this is a delta bundle" in r.stderr and "Traceback" not in r.stderr
        r = seed(*args, "--base", world["base"])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["totals"]["images"] == len(out["images"]) > 0 and out["totals"]["blobs_pushed"] > 0, out
        raw = reg.skopeo_raw("kubernetes/pause-amd64:3.1")  # pushed from blobs the delta took from its base
        assert json.loads(raw)["schemaVersion"] == 2
