"""The component table (installer/components.py): every file apply writes to a host has an owner component,
and everything the table names exists (templates, phases, gates and their handlers, executables in the bundle's
release files, packages in the bundle spec, units with their unit files)."""

from __future__ import annotations

import datetime as dt
import fnmatch
from pathlib import Path

import pytest
import yaml

from installer import (
    addons,
    components,
    gates,
    harbor_install,
    pki,
    pki_material,
    plan_rules,
    render,
    versions,
)
from installer import inventory as inventory_mod
from installer.components import BIN_DIR, COMPONENTS, PHASES, REGISTRY_HOST, ROLES, UNIT_DIR
from installer.plan_model import Gate
from tests.e2e import cluster
from tests.e2e.testbed import Testbed
from tests.fixtures.upstream import tarballs

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
IMAGES = {r: f"harbor.example.com/kubernetes/{r}:x" for r in
          ("kube-dns", "dnsmasq", "dns-sidecar", "coredns", "dashboard", "heapster", "metrics-server", "pause")}
SPEC = yaml.safe_load((ROOT / "bundle-spec.yaml").read_text())


def _e2e(tmp: Path, name: str) -> Path:
    """The inventories the e2e tests apply: 3 masters with etcd and lb plus nodes, and Harbor install mode."""
    tb = Testbed(prefix="tbc", net="198.18.9", n_hosts=5, workdir=str(tmp))  # names only: nothing is booted
    tb.key_path.parent.mkdir(parents=True, exist_ok=True)
    tb.key_path.write_text("not read: the inventory only needs the file to exist\n")
    if name == "e2e":
        return cluster.write_inventory(tb, tmp / "e2e.yaml", 5)
    if name == "e2e-ca":
        (tmp / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
        return cluster.write_inventory(tb, tmp / "e2e-ca.yaml", 4, ca_file=tmp / "ca.crt")
    return cluster.write_harbor_inventory(tb, tmp / "harbor.yaml")


INVENTORIES = {"example": lambda tmp: ROOT / "tests" / "golden" / "example" / "inventory.yaml",
               "inventory.example.yaml": lambda tmp: ROOT / "inventory.example.yaml",
               **{n: (lambda tmp, n=n: _e2e(tmp, n)) for n in ("e2e", "e2e-ca", "e2e-harbor")}}


def desired_paths(inv, p) -> dict:
    """{host: every path apply writes there}: rendered files with PKI material, executables, the bundle's repo
    and rpm keys where packages are installed, the addon manifests on the first master, the registry host's."""
    material = {h.name: pki_material.material_for(p, inv, h) for h in inv.hosts}
    rendered = render.render_all(inv, pki_files=material, images=IMAGES)
    out = {}
    for h in inv.hosts:
        paths = set(rendered[h.name]) | set(render.binaries_for(h))
        if plan_rules.wanted_packages(h):
            paths |= {f"{components.RPM_GPG_DIR}/RPM-GPG-KEY-CentOS-7", f"{components.REPO_DIR}/repodata/repomd.xml"}
        if h.name == inv.masters[0].name:
            addon_files = addons.files(ROOT / "manifests", inv, IMAGES)
            assert addon_files, "the repository's manifests/ render"
            paths |= set(addon_files)
        out[h.name] = (h, sorted(paths))
    reg = harbor_install.registry_host(inv)
    if reg is not None:
        files = set(render.registry_host_files(inv)) | set(pki_material.registry_material(p, inv))
        files |= {render.HARBOR_CFG, harbor_install.COMPOSE_PATH, f"{components.RPM_GPG_DIR}/RPM-GPG-KEY-CentOS-7",
                  f"{components.REPO_DIR}/repodata/repomd.xml"}
        out[reg.name] = (reg, sorted(files))
    return out


@pytest.fixture(scope="module", params=sorted(INVENTORIES))
def site(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inv")
    inv = inventory_mod.load(INVENTORIES[request.param](tmp))
    p = pki.Pki(tmp / "state", clock=lambda: T0)
    p.ensure(inv)
    return inv, p, desired_paths(inv, p)


def test_every_file_apply_writes_has_an_owner_component(site):
    """A file no component holds would have no phase and no restart: the table must name it."""
    _inv, _p, hosts = site
    unowned = {name: [p for p in paths if not plan_rules.owner_components(p, h)] for name, (h, paths) in hosts.items()}
    assert {n: ps for n, ps in unowned.items() if ps} == {}
    for h, paths in hosts.values():
        assert all(plan_rules.phase_of(p, h) in PHASES for p in paths)


def test_the_owner_check_fails_on_a_file_no_component_holds(site):
    _inv, _p, hosts = site
    for h, _paths in hosts.values():
        assert plan_rules.owner_components("/etc/nobody/owns.this", h) == ()
        with pytest.raises(ValueError, match="no component of .* holds /etc/nobody/owns.this"):
            plan_rules.phase_of("/etc/nobody/owns.this", h)


def test_every_unit_reads_a_file_apply_writes(site):
    """Each read glob of a running unit names something on some host (a typo would silently restart nothing)."""
    _inv, _p, hosts = site
    for h, paths in hosts.values():
        for c in components.for_host(h):
            if REGISTRY_HOST in c.roles:
                continue  # the registry host's docker keeps its package's configuration
            for u in c.units:
                dead = [g for g in u.reads if not any(fnmatch.fnmatchcase(p, g) for p in paths)]
                assert dead == [], f"{h.name} {u.name}"


def test_names_are_unique_and_units_shared_only_as_one_object():
    assert len({c.name for c in COMPONENTS}) == len(COMPONENTS)
    for c in COMPONENTS:
        for u in c.units:
            assert components.UNITS[u.name][0] is u, f"{c.name} defines its own {u.name}"


def test_phases_roles_and_apply_actions_exist():
    assert set(ROLES) == set(inventory_mod.ROLES)
    for c in COMPONENTS:
        assert c.phase in PHASES, c.name
        assert c.roles and set(c.roles) <= set(ROLES) | {REGISTRY_HOST}, c.name
        assert c.apply in (components.RESTART, components.KUBECTL_APPLY), c.name
        if c.apply == components.KUBECTL_APPLY:
            assert not c.units and c.files, f"{c.name}: applied with kubectl, it has manifests and no unit"


def test_templates_exist():
    names = {p.name for p in (ROOT / "installer" / "templates").iterdir()}
    assert [(c.name, t) for c in COMPONENTS for _path, t in c.templates if t not in names] == []


def test_every_unit_has_its_unit_file_and_its_executable():
    """The component that defines a unit renders its unit file (docker: a drop-in to the package's), and a unit
    reading an executable of BIN_DIR gets it from its component."""
    for name, (u, c) in components.UNITS.items():
        paths = {p for p, _ in c.templates}
        assert f"{UNIT_DIR}/{name}.service" in paths or any(p.startswith(f"{UNIT_DIR}/{name}.service.d/")
                                                           for p in paths), name
        execs = [g for g in u.reads if g.startswith(BIN_DIR + "/")]
        assert all(g in {b.path for b in c.binaries} for g in execs), name
        assert c.phase == plan_rules.UNIT_PHASE[name]


def test_gates_are_gates_with_a_handler():
    for c in COMPONENTS:
        if c.gate is not None:
            assert Gate(c.gate) in gates.HANDLERS, c.name
            assert set(c.gate_units) <= set(components.UNITS), c.name
    gated = {c.phase for c in COMPONENTS if c.gate}
    assert gated == {"etcd", "masters", "lb", "nodes", "registry"}


def _spec_urls():
    return {b["url"].rsplit("/", 1)[-1]: b["url"] for b in SPEC["binaries"]}


def test_every_executable_comes_from_a_release_file_of_the_spec_in_its_upstream_layout():
    """Each binary's archive glob matches one release file of bundle-spec.yaml, and the member exists in that file
    as upstream lays it out (the stand-in tarballs have the real layout: tests/integration/test_upstream.py)."""
    urls = _spec_urls()
    for c in COMPONENTS:
        for b in c.binaries:
            found = [u for f, u in urls.items() if fnmatch.fnmatchcase(f, b.archive)]
            assert len(found) == 1, f"{c.name} {b.name}: {b.archive} matches {found}"
            if b.member is None:
                assert found[0] in tarballs.PLAIN, b.name
                continue
            suffix = b.member.lstrip("/")
            members = [m.lstrip("./") for m in tarballs.expected_members(found[0]) if not m.endswith("/")]
            assert [m for m in members if m == suffix or m.endswith("/" + suffix)], f"{b.name} not in {found[0]}"


def test_versions_packages_and_manifest_components_exist():
    spec_binaries = {b["name"] for b in SPEC["binaries"]}
    spec_rpms = {p["name"] for p in SPEC["rpms"]["packages"]}
    for v in components.VERSIONS:
        kind, name = v.manifest.split("/", 1)
        assert name in (spec_binaries if kind == "binary" else spec_rpms), v.manifest
        assert v.package is None or v.package in spec_rpms
    names = {v.name for v in components.VERSIONS}
    for c in COMPONENTS:
        assert set(c.packages) <= spec_rpms, c.name
        assert all(b.version is None or b.version in names for b in c.binaries), c.name
    assert versions.COMPONENT_VERSIONS["binary/kubernetes-server"] == versions.KUBERNETES


def test_ports_are_numbers_or_cluster_settings():
    cluster_fields = set(inventory_mod.Cluster.model_fields)
    for name, (u, _c) in components.UNITS.items():
        assert all(isinstance(p, int) or p in cluster_fields for p in u.ports), name


def test_material_goes_where_its_component_says(site):
    """pki_material.material_for writes exactly the material paths of the host's components, nothing else."""
    inv, p, hosts = site
    for h, _paths in hosts.values():
        if not h.roles:
            continue
        comps = components.for_host(h)
        declared = {x for c in comps for m in c.material for x in (m.path, m.key_path) if x}
        if any(m.kind == components.REGISTRY_CA for c in comps for m in c.material) \
                and pki_material.registry_ca(p, inv) is not None:
            declared.add(render.registry_ca_path(inv))
        assert set(pki_material.material_for(p, inv, h)) == declared
