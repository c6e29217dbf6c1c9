"""The stand-in runtime is split into modules that are pasted into one namespace: check that this holds together.

The modules import nothing from one another (ruff's F821 is off in them), so these tests do what an import
would: every executable compiles, no top-level name is defined twice with different meanings, every name any
module uses is defined by some module (or is a builtin), each module imports the standard library modules it
uses itself, and _runtime (what tests import) holds exactly the runtime's names.
"""

import ast
import builtins
import subprocess
import symtable
import sys
from pathlib import Path

import pytest

from tests.fixtures import standins

_DIR = Path(standins.__file__).resolve().parent
_NOT_RUNTIME = {"__init__.py", "_runtime.py", "testing.py"}  # importable helpers, never pasted
_MAX_LINES = 1500


def _sources():
    return {name: (_DIR / name).read_text(encoding="utf-8") for name in standins.RUNTIME_MODULES}


def _bindings(tree):
    """{name: [what binds it]} for a module's top-level statements; an import binds its top-level package."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                out.setdefault(name, []).append("import " + (alias.name if alias.asname else name))
            continue
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                out.setdefault(alias.asname or alias.name, []).append("from %s import %s" % (node.module, alias.name))
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.With):
                targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
            else:
                targets = [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Store)]
        else:
            names = []
        for name in names:
            out.setdefault(name, []).append(ast.dump(node))
    return out


def _global_references(source, filename):
    """Names a module looks up in its global namespace, from any scope (module, class, function)."""
    refs = set()

    def walk(table):
        for sym in table.get_symbols():
            if sym.is_referenced() and (table.get_type() == "module" or sym.is_global()):
                refs.add(sym.get_name())
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(source, filename, "exec"))
    return refs


def test_every_runtime_module_is_listed_once_and_nothing_else_is():
    on_disk = {p.name for p in _DIR.glob("*.py")} - _NOT_RUNTIME
    assert sorted(standins.RUNTIME_MODULES) == sorted(on_disk)
    assert len(set(standins.RUNTIME_MODULES)) == len(standins.RUNTIME_MODULES)
    assert standins.RUNTIME_MODULES[-1] == "_main.py"  # the entry point runs last, after every definition


@pytest.mark.parametrize("name", standins.RUNTIME_MODULES)
def test_module_is_small_and_says_what_is_real_and_what_is_pretended(name):
    text = (_DIR / name).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < _MAX_LINES, "%s has %d lines: split it" % (name, len(lines))
    head = []
    for line in lines:
        if not line.startswith("#"):
            break
        head.append(line)
    header = "\n".join(head)
    assert "# Real: " in header and "# Faked or missing: " in header, name
    assert "# ruff: noqa: F821" in header, name  # documented: the names of the other modules resolve when pasted


@pytest.mark.parametrize("component", standins.NAMES)
def test_each_executable_is_the_header_plus_every_module_in_order_and_compiles(component):
    src = standins.executable(component).decode("utf-8")
    compile(src, component, "exec", dont_inherit=True)
    ast.parse(src, feature_version=(3, 9))
    positions = [src.index("# >>> tests/fixtures/standins/%s\n" % name) for name in standins.RUNTIME_MODULES]
    assert positions == sorted(positions)
    for name, text in _sources().items():
        assert text in src, name  # pasted verbatim
    assert src.index("_FLAG_TABLES = ") < positions[0]


def _module_level_names(source, filename):
    """What symtable says a module binds at its top level (to check that _bindings misses nothing)."""
    table = symtable.symtable(source, filename, "exec")
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}


def test_no_top_level_name_is_defined_twice_across_modules_unless_identically():
    seen = {}
    clashes = []
    for name, text in _sources().items():
        bindings = _bindings(ast.parse(text, name))
        assert set(bindings) == _module_level_names(text, name), name
        for binding, whats in bindings.items():
            for what in whats:
                if binding in seen and seen[binding][1] != what:
                    clashes.append("%s: %s and %s" % (binding, seen[binding][0], name))
                seen.setdefault(binding, (name, what))
    assert clashes == []


def test_a_clash_between_modules_is_found():
    """The check above must see a redefinition that differs (a guard against a check that cannot fail)."""
    a = _bindings(ast.parse("import re\nLIMIT = 1\n\n\ndef f():\n    return 1\n"))
    b = _bindings(ast.parse("import re\nLIMIT = 2\n\n\ndef f():\n    return 1\n"))
    assert a["re"] == b["re"] and a["f"] == b["f"] and a["LIMIT"] != b["LIMIT"]


def test_every_name_used_is_defined_by_some_module_or_is_a_builtin():
    sources = _sources()
    defined = set(dir(builtins)) | {"__name__", "__file__"}
    for name, text in sources.items():
        defined |= set(_bindings(ast.parse(text, name)))
    undefined = {}
    for name, text in sources.items():
        for ref in sorted(_global_references(text, name) - defined):
            undefined.setdefault(name, []).append(ref)
    assert undefined == {}


def test_an_undefined_name_is_found():
    assert _global_references("def f():\n    return missing_name(1)\n", "x") >= {"missing_name"}
    assert "local" not in _global_references("def f():\n    local = 1\n    return local\n", "x")


def test_each_module_imports_the_standard_library_modules_it_uses():
    sources = _sources()
    imported = {}
    for name, text in sources.items():
        imported[name] = {b for b, whats in _bindings(ast.parse(text, name)).items()
                          if all(w.startswith(("import ", "from ")) for w in whats)}
    stdlib = set().union(*imported.values())
    assert stdlib <= set(sys.stdlib_module_names)
    missing = {}
    for name, text in sources.items():
        lacking = (_global_references(text, name) & stdlib) - imported[name]
        if lacking:
            missing[name] = sorted(lacking)
    assert missing == {}


# The one import outside the standard library: etcd's v3 API is gRPC, and the stand-in kube-apiserver must
# authenticate to etcd by its client certificate's CN over gRPC as the real one does (etcd's JSON gateway
# ignores certificates). It is imported inside _etcd.py's EtcdV3 only, so that every other component and the
# tests' _runtime work without the package.
_NON_STDLIB_IMPORTS = {("_etcd.py", "grpc")}


def _imports_anywhere(tree):
    """(module name, at top level?) of every import statement of a module, in any scope."""
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(("." * node.level + (node.module or ""), id(node) in top))
    return out


def test_only_the_etcd_client_imports_something_outside_the_standard_library_and_only_lazily():
    found = set()
    for name, text in _sources().items():
        for module, top_level in _imports_anywhere(ast.parse(text, name)):
            if module.split(".")[0] in sys.stdlib_module_names:
                continue
            found.add((name, module))
            assert not top_level, "%s imports %s at top level: _runtime and the other components need it" % (
                name, module)
    assert found == _NON_STDLIB_IMPORTS


def test_a_non_stdlib_import_in_a_function_is_found():
    tree = ast.parse("import os\n\n\ndef f():\n    import yaml\n    from grpc import aio\n")
    assert _imports_anywhere(tree) == [("os", True), ("yaml", False), ("grpc", False)]


def test_runtime_module_for_tests_holds_exactly_the_runtime_names():
    from tests.fixtures.standins import _runtime

    defined = set()
    for name, text in _sources().items():
        defined |= set(_bindings(ast.parse(text, name)))
    extra = {n for n in vars(_runtime) if not n.startswith("__")} - defined - {"exec_runtime"}
    assert extra == set()
    assert defined <= set(vars(_runtime))
    assert _runtime.parse_pflag.__code__.co_filename == str(_DIR / "_flags.py")  # tracebacks name the module


def test_an_executable_runs_from_the_pasted_modules(tmp_path):
    paths = standins.write_all(tmp_path, names=("kube-proxy", "flanneld"))
    res = subprocess.run([paths["kube-proxy"], "--version"], capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout) == (0, "Kubernetes v1.10.3\n")
    res = subprocess.run([paths["flanneld"], "-version"], capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (0, "v0.10.0\n")
