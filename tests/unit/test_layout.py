"""The package's shape: no import cycle, io/ below the stages and tools, no module importing another's
private name, short functions, private APIs of other libraries only in compat.py."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "axolotl_decselfmask"
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            # `from package import submodule` imports the submodule (and runs the package's face)
            names = subs if all(s in modules for s in subs) else [node.module] + subs
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found.update(n for n in names if n in modules)
    return found


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    # a package's face may import its own submodules; a submodule importing its face is the loop
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


#: a lower layer and the packages above it, which it never imports (they build on it)
LAYERS = {"axolotl_decselfmask.io": ("axolotl_decselfmask.stage1", "axolotl_decselfmask.stage2",
                                     "axolotl_decselfmask.tools")}


def _imported_names(path: Path, module: str) -> set[str]:
    """Every name ``path`` imports, module level or inside functions, relative imports made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.update([base, *(f"{base}.{a.name}" for a in node.names)])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _upward_imports(path: Path, module: str, above: tuple[str, ...]) -> list[str]:
    return sorted(n for n in _imported_names(path, module) if any(n == a or n.startswith(a + ".") for a in above))


def test_lower_layers_import_nothing_above_them():
    """io/ imports nothing from stage1/, stage2/ or tools/ (not even inside a function)."""
    found = {}
    for module, path in _modules().items():
        for lower, above in LAYERS.items():
            if module == lower or module.startswith(lower + "."):
                if hits := _upward_imports(path, module, above):
                    found[module] = hits
    assert not found, f"a lower layer imports from above it: {found}"


def test_the_layer_check_sees_lazy_and_relative_imports(tmp_path):
    path = tmp_path / "labelled.py"
    path.write_text("import os\n\ndef f():\n    from axolotl_decselfmask.stage2.outputs import split_path\n"
                    "    from ..tools import models\n    from .files import read_json\n")
    above = LAYERS["axolotl_decselfmask.io"]
    assert _upward_imports(path, "axolotl_decselfmask.io.labelled", above) == [
        "axolotl_decselfmask.stage2.outputs", "axolotl_decselfmask.stage2.outputs.split_path",
        "axolotl_decselfmask.tools", "axolotl_decselfmask.tools.models"]


def _private_imports(path: Path) -> list[str]:
    """``from <a package module> import _name``: another module's private name."""
    return [f"{node.lineno}: {node.module}.{a.name}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == PKG.name)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def test_no_module_imports_another_modules_private_name():
    """A name with a leading underscore stays in its module; one that another module needs is public."""
    found = {module: hits for module, path in _modules().items() if (hits := _private_imports(path))}
    assert not found, f"modules importing another module's private name: {found}"


def test_no_long_functions():
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(PKG)}:{node.name} ({n} lines)")
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def _private_uses(path: Path) -> list[str]:
    """``obj._name`` on objects other than self/cls, ``getattr(obj, "_name")``, and ``sys.modules``."""
    tree = ast.parse(path.read_text())
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    hits = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            hits.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        if isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr == "modules" and base == "sys":
                hits.append(f"{node.lineno}: sys.modules")
            elif (node.attr.startswith("_") and not node.attr.startswith("__") and base not in ("self", "cls")
                  and node.attr not in own):
                hits.append(f"{node.lineno}: .{node.attr}")
    return hits


def test_private_apis_only_in_compat():
    found = {}
    for path in PKG.rglob("*.py"):
        if path.name == "compat.py":
            continue
        hits = _private_uses(path)
        if hits:
            found[str(path.relative_to(PKG))] = hits
    assert not found, f"private attributes of other libraries outside compat.py: {found}"


def test_test_files_have_unique_names():
    """pytest imports test files by basename (no __init__.py): the same name in unit/ and e2e/ breaks collection."""
    names = [p.name for p in (PKG.parent / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
