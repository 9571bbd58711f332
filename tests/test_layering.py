"""irkit's imports run one way (DESIGN.md): ir <- ops <- passes / onnx io <- runtimes <- nn <-
train <- cli, and no package imports one that imports it back.

The imports are read from the source (ast), function-level ones included; those under
`if TYPE_CHECKING:` are not imports at run time and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where each package's source lives: passes/ and runtimes/ install as irkit.passes, .runtimes
SOURCES = {"irkit": ROOT / "irkit", "irkit.passes": ROOT / "passes",
           "irkit.runtimes": ROOT / "runtimes"}
# low to high: a module may import modules of its own layer and of the layers below
LAYERS = [
    ("base", ["irkit.errors", "irkit.safe_io", "irkit.data", "irkit.version",
              "irkit.signature", "irkit.distributed"]),  # leaves: they import no other irkit module
    ("ir", ["irkit.ir", "irkit.ir_verify"]),
    ("ops", ["irkit.ops"]),
    ("passes / onnx io", ["irkit.passes", "irkit.onnx_io", "irkit.onnx_compat",
                          "irkit.onnx_validate", "irkit.onnx_external", "irkit.onnx_wire"]),
    ("runtimes", ["irkit.runtimes"]),
    # run graphs: traced functions, the ONNX-file optimizer
    ("functions / tools", ["irkit.function", "irkit", "irkit.graph_optimize"]),
    ("nn", ["irkit.nn"]),
    ("train", ["irkit.train", "irkit.spec", "irkit.settings"]),
    ("cli", ["irkit.cli", "irkit.cli_train", "irkit.cli_graph", "irkit.cli_lab",
             "irkit.launch"]),
]
# modules that are one package split over files (the command line: its commands' modules
# and the click group import each other)
SAME_PACKAGE = {"irkit.cli_train": "irkit.cli", "irkit.cli_graph": "irkit.cli",
                "irkit.cli_lab": "irkit.cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    """The package (or top-level module) a module belongs to, e.g. irkit.ops, irkit.onnx_io."""
    units = [name for _, names in LAYERS for name in names
             if module == name or (name != "irkit" and module.startswith(name + "."))]
    assert units, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    unit = max(units, key=len)
    return SAME_PACKAGE.get(unit, unit)


def _layer(module: str) -> int:
    unit = _unit(module)
    return next(i for i, (_, names) in enumerate(LAYERS) if unit in names)


def _runtime_nodes(tree: ast.AST):
    """Every node, except the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(module: str, path: Path) -> set[str]:
    """irkit modules `module` imports (`from irkit import ops` imports irkit.ops)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "irkit" or m.startswith("irkit.")}


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _upward() -> list[str]:
    return [f"{m} ({LAYERS[_layer(m)][0]}) imports {i} ({LAYERS[_layer(i)][0]})"
            for m, targets in sorted(IMPORTS.items()) for i in sorted(targets)
            if _layer(i) > _layer(m)]


def test_every_module_is_in_a_layer() -> None:
    assert len(MODULES) > 40 and "irkit.passes.autodiff" in MODULES
    for module in MODULES:
        _layer(module)


def test_imports_run_one_way() -> None:
    assert not _upward()


def test_nn_imports_nothing_from_train() -> None:
    """Layers build IR and know no trainer (as Keras' Layer knows no Trainer)."""
    assert not [(m, i) for m, targets in IMPORTS.items() for i in targets
                if _unit(m) == "irkit.nn" and _unit(i) in ("irkit.train", "irkit.settings")]


def test_no_import_cycle_among_packages() -> None:
    edges: dict[str, set[str]] = {}
    for m, targets in IMPORTS.items():
        for i in targets:
            if _unit(i) != _unit(m):
                edges.setdefault(_unit(m), set()).add(_unit(i))
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(edges.get(unit, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [unit, nxt])}"
            if nxt not in state:
                visit(nxt, path + [unit])
        state[unit] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [])


def test_the_checks_see_an_upward_import() -> None:
    """The walk finds function-level imports, and skips TYPE_CHECKING ones."""
    assert "irkit.passes" in IMPORTS["irkit.function"]  # imported inside a function
    assert "irkit.ir" not in IMPORTS["irkit.ir_verify"]  # only for type checking
    assert _layer("irkit.ops.conv") < _layer("irkit.passes.autodiff") < _layer("irkit.cli")
