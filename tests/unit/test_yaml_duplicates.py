"""A mapping key given twice is an error with its YAML path and both lines, in every document read_yaml reads."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bundler import spec as spec_mod
from contract.documents import read_yaml
from contract.errors import ValidationError
from installer import inventory as inv_mod

ROOT = Path(__file__).resolve().parents[2]


def details(path: Path, load) -> list:
    with pytest.raises(ValidationError) as e:
        load(path)
    assert e.value.exit_code == 2 and e.value.hint
    return e.value.details


def test_inventory_duplicate_key_names_path_and_both_lines(tmp_path):
    text = (ROOT / "inventory.example.yaml").read_text()
    lines = text.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("  vip: "))
    lines.insert(i + 3, "  vip: 192.168.10.101\n")  # same mapping (cluster), three lines further down
    p = tmp_path / "inv.yaml"
    p.write_text("".join(lines))
    d = details(p, inv_mod.load)
    assert d == [f"cluster.vip: duplicate key (lines {i + 1} and {i + 4}) (hint: remove one of them)"], d


def test_duplicates_inside_lists_and_flow_mappings_all_at_once(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text(textwrap.dedent("""\
        cluster: {vip: 192.168.1.100}
        registry: {hostname: reg.local, address: 192.168.1.5}
        hosts:
          - {name: m1, address: 192.168.1.11, roles: [master, etcd, lb, node]}
          - name: m2
            address: 192.168.1.12
            name: m3
            roles: [node]
          - {name: m4, address: 192.168.1.14, roles: [node], address: 192.168.1.15}
        registry: {hostname: reg2.local, address: 192.168.1.6}
        """))
    d = details(p, inv_mod.load)
    assert d == [
        "hosts[1].name: duplicate key (lines 5 and 7) (hint: remove one of them)",
        "hosts[2].address: duplicate key (line 9, columns 16 and 54) (hint: remove one of them)",
        "registry: duplicate key (lines 2 and 10) (hint: remove one of them)",
    ], d


def test_a_key_three_times_names_the_first_line_each_time(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: 1\nb: 2\na: 3\na: 4\n")
    with pytest.raises(ValidationError) as e:
        read_yaml(p, "inventory")
    assert [x.split(" (hint")[0] for x in e.value.details] == [
        "a: duplicate key (lines 1 and 3)", "a: duplicate key (lines 1 and 4)"]


def test_same_text_different_type_and_merge_keys_are_not_duplicates(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text('base: &b {x: 1}\nm:\n  <<: *b\n  1: int\n  "1": str\nn:\n  <<: *b\n  y: 2\n')
    data, lines = read_yaml(p, "inventory")
    assert data["m"] == {"x": 1, 1: "int", "1": "str"} and lines[("n", "y")] == 8


def test_bundle_spec_duplicate_key(tmp_path):
    text = (ROOT / "bundle-spec.yaml").read_text()
    p = tmp_path / "spec.yaml"
    p.write_text(text + "name: other\n")
    first = 1 + next(n for n, line in enumerate(text.splitlines()) if line.startswith("name: "))
    last = len(text.splitlines()) + 1
    d = details(p, spec_mod.load)
    assert d == [f"name: duplicate key (lines {first} and {last}) (hint: remove one of them)"], d


def test_mirrors_file_duplicate_key(tmp_path):
    m = tmp_path / "mirrors.yaml"
    m.write_text(yaml.safe_dump({"mirrors": {"urls": [{"from": "https://a/", "to": "https://b/"}]}})
                 + "mirrors: {}\n")
    d = details(m, spec_mod.load_mirrors)
    assert len(d) == 1 and d[0].startswith("mirrors: duplicate key (lines 1 and "), d


@pytest.mark.parametrize("prog, doc, again", [("installer", "inventory.example.yaml", "hosts: []\n"),
                                              ("bundler", "bundle-spec.yaml", "images: []\n")])
def test_cli_exit_2_no_traceback(tmp_path, prog, doc, again):
    p = tmp_path / doc
    p.write_text((ROOT / doc).read_text() + again)
    r = subprocess.run([sys.executable, "-m", f"{prog}.cli", "validate", str(p)], capture_output=True, text=True,
                       cwd=ROOT, check=False)
    assert r.returncode == 2, r.stderr
    assert ": duplicate key (lines " in r.stderr and "remove one of them" in r.stderr
    assert "Traceback" not in r.stderr
