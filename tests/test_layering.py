"""Walks every module's imports (ast) and enforces the layering table of DESIGN §2.

ring/, antientropy/ and gossip/ are sans-IO libraries: they never import trio, sockets or an upper layer,
never read the wall clock and never touch the global random generator (a seeded `random.Random` passed in
is fine). Imports only point down: tools → dynamo → gossip → ring; antientropy stands alone.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
OURS = {"dynamo", "ring", "gossip", "antientropy", "tools", "tests"}
IO_MODULES = {"trio", "socket", "asyncio", "selectors", "ssl", "subprocess", "threading", "sqlite3", "secrets"}

# package → which of our packages it may import (besides itself)
ALLOWED = {
    "ring": set(),
    "antientropy": set(),
    "gossip": {"ring"},
    "dynamo": {"ring", "gossip", "antientropy"},
    "tools": {"dynamo", "ring", "gossip", "antientropy"},
}
SANS_IO = {"ring", "antientropy", "gossip"}
CLOCK_CALLS = {("time", name) for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter",
                                            "perf_counter_ns", "sleep", "localtime", "gmtime")}
CLOCK_CALLS |= {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
                ("os", "urandom"), ("uuid", "uuid1"), ("uuid", "uuid4")}


def modules(package):
    return sorted((ROOT / package).rglob("*.py"))


def imported_roots(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0], None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.lineno, node.module.split(".")[0], alias.name


def violations(package, path):
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for lineno, root, name in imported_roots(tree):
        where = f"{path.relative_to(ROOT)}:{lineno}"
        if root in OURS and root != package and root not in ALLOWED[package]:
            found.append(f"{where} imports {root} (against DESIGN §2)")
        if package in SANS_IO:
            if root in IO_MODULES:
                found.append(f"{where} imports I/O module {root}")
            if root == "random" and name not in (None, "Random"):
                found.append(f"{where} imports the global random function {name}")
            if root == "time" and name is not None:
                found.append(f"{where} imports the wall clock ({name})")
    if package in SANS_IO:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                pair = (node.value.id, node.attr)
                if pair in CLOCK_CALLS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} reads the clock/entropy: {'.'.join(pair)}")
                if node.value.id == "random" and node.attr != "Random":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses the global random: random.{node.attr}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_respects_layering(package):
    problems = [v for path in modules(package) for v in violations(package, path)]
    assert problems == []


def test_checker_catches_bad_imports(tmp_path, monkeypatch):
    """The checker itself must be able to fail: feed it a module that breaks every rule."""
    bad = tmp_path / "ring" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import trio\nfrom dynamo import node\nimport random\nimport time\n"
                   "x = random.random()\ny = time.monotonic()\nfrom gossip.membership import View\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = violations("ring", bad)
    assert any("trio" in f for f in found)
    assert any("imports dynamo" in f for f in found)
    assert any("imports gossip" in f for f in found)
    assert any("random.random" in f for f in found)
    assert any("time.monotonic" in f for f in found)
