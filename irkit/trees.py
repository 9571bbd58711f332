"""Pytrees: arguments that are nested dicts, lists and tuples of arrays (JAX's name for them).

`flatten(tree)` gives the leaves in a fixed order (dict keys sorted, as JAX sorts them) and a
hashable description of the structure; `unflatten(structure, leaves)` rebuilds the tree. A
traced function gets each argument rebuilt from its traced leaves, and gradients come back in
the shape of the arguments they are taken for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LEAF = ("leaf",)


def flatten(tree: Any) -> tuple[list[Any], tuple]:
    """(leaves, structure) of a nested dict / list / tuple; anything else is one leaf."""
    if isinstance(tree, dict):
        keys = sorted(tree)
        parts = [flatten(tree[k]) for k in keys]
        return [x for leaves, _ in parts for x in leaves], ("dict", tuple(keys),
                                                             tuple(s for _, s in parts))
    if isinstance(tree, (list, tuple)):
        parts = [flatten(x) for x in tree]
        kind = "list" if isinstance(tree, list) else "tuple"
        return [x for leaves, _ in parts for x in leaves], (kind, tuple(s for _, s in parts))
    return [tree], LEAF


def count(structure: tuple) -> int:
    """How many leaves a structure holds."""
    if structure == LEAF:
        return 1
    children = structure[2] if structure[0] == "dict" else structure[1]
    return sum(count(c) for c in children)


def unflatten(structure: tuple, leaves: Sequence[Any]) -> Any:
    """The tree of `structure` with `leaves` in flatten's order."""
    if structure == LEAF:
        return leaves[0]
    children = structure[2] if structure[0] == "dict" else structure[1]
    parts, start = [], 0
    for c in children:
        n = count(c)
        parts.append(unflatten(c, leaves[start:start + n]))
        start += n
    if structure[0] == "dict":
        return dict(zip(structure[1], parts))
    return parts if structure[0] == "list" else tuple(parts)


def paths(structure: tuple, prefix: str) -> list[str]:
    """A name per leaf: `prefix`, then `.key` / `.index` for each level (params.w, xs.0)."""
    if structure == LEAF:
        return [prefix]
    if structure[0] == "dict":
        named = zip((str(k) for k in structure[1]), structure[2])
    else:
        named = ((str(i), c) for i, c in enumerate(structure[1]))
    return [p for key, c in named for p in paths(c, f"{prefix}.{key}")]
