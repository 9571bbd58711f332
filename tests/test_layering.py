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
    ("base", ["irkit.checkout", "irkit.errors", "irkit.safe_io", "irkit.data", "irkit.version",
              "irkit.signature", "irkit.distributed", "irkit.notebook"]),  # leaves
    ("ir", ["irkit.ir", "irkit.ir_verify", "irkit.ir_display"]),
    ("ops", ["irkit.ops"]),
    ("passes / onnx io", ["irkit.passes", "irkit.onnx_io"]),
    ("runtimes", ["irkit.runtimes"]),
    # run graphs: traced functions, the ONNX-file optimizer
    ("functions / tools", ["irkit.function", "irkit", "irkit.graph_optimize", "irkit.tensors",
                           "irkit.tensor_shape", "irkit.tensor_math", "irkit.numpy",
                           "irkit.trees"]),
    ("nn", ["irkit.nn"]),
    ("train", ["irkit.train", "irkit.spec"]),
    ("cli", ["irkit.cli"]),
]


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
    return max(units, key=len)


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
                if _unit(m) == "irkit.nn" and _unit(i) == "irkit.train"]


def test_model_knows_no_runtime() -> None:
    """Layers, training and traced functions reach runtimes only through the registry: none of
    their modules imports onnxruntime or irkit's onnxruntime runtime."""
    found = [(m, i) for m, targets in IMPORTS.items() for i in targets
             if _unit(m) in ("irkit.nn", "irkit.train", "irkit.function")
             and i.startswith("irkit.runtimes.") and i != "irkit.runtimes.base"]
    assert not found
    assert "irkit.runtimes" in IMPORTS["irkit.train.model"]  # the registry, through the package
    assert not any("onnxruntime" in ast.unparse(node) for node in
                   ast.walk(ast.parse(MODULES["irkit.train.model"].read_text()))
                   if isinstance(node, (ast.Import, ast.ImportFrom)))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a path that returns to its start) among `edges`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def _unit_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for m, targets in IMPORTS.items():
        edges.setdefault(_unit(m), set()).update(_unit(i) for i in targets if _unit(i) != _unit(m))
    return edges


def test_no_import_cycle_among_packages() -> None:
    cycle = find_cycle(_unit_edges())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_no_import_cycle_among_modules() -> None:
    """Not even inside a package: no two modules import each other, directly or around a
    circle (function-level imports count; a package's __init__ is a module of its own)."""
    edges = {m: {i for i in targets if i != m} for m, targets in IMPORTS.items()}
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_finds_a_cycle() -> None:
    edges = {m: set(t) for m, t in IMPORTS.items()}
    edges["irkit.ir"] = edges["irkit.ir"] | {"irkit.cli.app"}  # planted: ir -> cli -> ... -> ir
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_the_checks_see_an_upward_import() -> None:
    """The walk finds function-level imports, and skips TYPE_CHECKING ones."""
    assert "irkit.passes" in IMPORTS["irkit.function"]  # imported inside a function
    assert "irkit.ir" not in IMPORTS["irkit.ir_verify"]  # only for type checking
    assert _layer("irkit.ops.conv") < _layer("irkit.passes.autodiff") < _layer("irkit.cli")
