"""The graph IR: `Graph` holds `Node`s that read and write `Value`s, with true use-def chains.

Edit a graph only through its methods (`add_node`, `replace_all_uses_with`, `remove_node`,
...); they keep `Value.producer` and `Value.uses` correct, and `Graph.verify` checks every
invariant. Shapes are tuples whose entries are ints (static), strings (symbolic, e.g. "N") or
None (unknown); a shape of None means the rank is unknown.

The IR knows no particular op: a node stores its op's name, attributes as given and its
outputs' types, which whoever adds it supplies (`irkit.ops` infers them where an op is applied).
Attribute defaults, inference and checks of known ops live in `irkit.ops`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, SupportsIndex

import numpy as np

from irkit.errors import IRError
from irkit.ir_verify import verify_graph

Dim = int | str | None
Shape = tuple[Dim, ...] | None
OutputType = tuple[Any, Shape]  # (dtype, shape) of a node output

# Full verification around every pass and export is a debugging aid (the test suite turns it
# on): IRKIT_VERIFY=1 in the environment, or set_verification(True).
_verification = os.environ.get("IRKIT_VERIFY", "") not in ("", "0")


def set_verification(enabled: bool) -> bool:
    """Switch debug verification (`irkit.ops.debug_verify`: around passes and exports) on or
    off; returns the old setting."""
    global _verification
    old, _verification = _verification, bool(enabled)
    return old


def verification_enabled() -> bool:
    """Whether debug verification is on (IRKIT_VERIFY=1, or `set_verification(True)`)."""
    return _verification


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, `base_1`, `base_2`...: the first not in `taken`, which it joins (for protos)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class Value:
    """A tensor in the graph: made by one node (or a graph input / initializer), read by many."""

    __slots__ = ("name", "dtype", "shape", "producer", "uses", "graph", "const", "__weakref__")

    def __init__(self, graph: Graph, name: str, dtype: Any, shape: Shape) -> None:
        self.graph = graph
        self.name = name
        self.dtype = np.dtype(dtype)
        self.shape = None if shape is None else tuple(shape)
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        self.const: np.ndarray | None = None  # the data of an initializer

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_initializer(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        shape = "?" if self.shape is None else "x".join(str(d) for d in self.shape) or "scalar"
        return f"Value({self.name!r}, {self.dtype}, {shape})"

    # Operators are installed by irkit.ops (ops sit above the IR); see irkit/ops/__init__.py.


class Node:
    """One op application: `outputs = op_type[attributes](inputs)`; absent optional inputs: None."""

    __slots__ = ("graph", "name", "op_type", "domain", "inputs", "outputs", "attributes")

    def __init__(self, graph: Graph, name: str, op_type: str, domain: str,
                 attributes: dict[str, Any]) -> None:
        self.graph = graph
        self.name = name
        self.op_type = op_type
        self.domain = domain
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.attributes = dict(attributes)

    def __repr__(self) -> str:
        ins = ", ".join(v.name if v is not None else "" for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Node({self.name!r}: {outs} = {self.op_type}({ins}))"


class ValueList(list):
    """A list of Values (a graph's outputs) whose `in` takes constant time: it counts its
    members by identity (Values compare by identity), so passes that ask "is this a graph
    output?" of every node stay linear in the graph."""

    def __init__(self, items: Iterable[Value] = ()) -> None:
        super().__init__(items)
        self._count: dict[int, int] = {}
        for v in self:
            self._add(v)

    def _add(self, v: Value) -> None:
        self._count[id(v)] = self._count.get(id(v), 0) + 1

    def _drop(self, v: Value) -> None:
        left = self._count[id(v)] - 1
        if left:
            self._count[id(v)] = left
        else:
            del self._count[id(v)]

    def __contains__(self, v: object) -> bool:
        return id(v) in self._count

    def __reduce__(self):  # copies and pickles rebuild the counts
        return (ValueList, (list(self),))

    def append(self, v: Value) -> None:
        super().append(v)
        self._add(v)

    def extend(self, items: Iterable[Value]) -> None:
        for v in items:
            self.append(v)

    def __iadd__(self, items: Iterable[Value]) -> ValueList:
        self.extend(items)
        return self

    def insert(self, index: SupportsIndex, v: Value) -> None:
        super().insert(index, v)
        self._add(v)

    def remove(self, v: Value) -> None:
        super().remove(v)
        self._drop(v)

    def pop(self, index: SupportsIndex = -1) -> Value:
        v = super().pop(index)
        self._drop(v)
        return v

    def clear(self) -> None:
        super().clear()
        self._count.clear()

    def __setitem__(self, index, value) -> None:
        old = self[index] if isinstance(index, slice) else [self[index]]
        super().__setitem__(index, value)
        for v in old:
            self._drop(v)
        for v in (self[index] if isinstance(index, slice) else [value]):
            self._add(v)

    def __delitem__(self, index) -> None:
        old = self[index] if isinstance(index, slice) else [self[index]]
        super().__delitem__(index)
        for v in old:
            self._drop(v)

    def __imul__(self, n: SupportsIndex) -> ValueList:
        items = list(self)
        super().__imul__(n)
        for v in items * (int(n) - 1 if int(n) > 0 else 0):
            self._add(v)
        if int(n) <= 0:
            self._count.clear()
        return self


class Graph:
    """A computation graph: inputs, initializers (constants and parameters), nodes, outputs."""

    def __init__(self, name: str = "irkit") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self._outputs = ValueList()
        self._nodes: list[Node] = []
        self._removed = 0  # nodes removed from `_nodes` lazily, dropped on the next read
        self.initializers: dict[str, Value] = {}
        self.metadata: dict[str, str] = {}
        self._values: dict[str, Value] = {}
        self._node_names: set[str] = set()
        self._counter = itertools.count()
        self._scope = ""
        self._const_cache: dict[tuple, Value] = {}

    @property
    def nodes(self) -> list[Node]:
        """The nodes, in order. `remove_node` only marks a node; the list drops the removed
        ones (in place) when next read, so removing k nodes costs one pass, not k."""
        if self._removed:
            self._nodes[:] = [n for n in self._nodes if n.graph is self]
            self._removed = 0
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: Iterable[Node]) -> None:
        self._nodes, self._removed = list(nodes), 0

    @property
    def outputs(self) -> ValueList:
        """The graph's outputs, in order (any list assigned becomes a ValueList)."""
        return self._outputs

    @outputs.setter
    def outputs(self, values: Iterable[Value]) -> None:
        self._outputs = ValueList(values)

    # ---- naming -------------------------------------------------------------------------
    @contextlib.contextmanager
    def name_scope(self, prefix: str) -> Iterator[None]:
        """Prefix the names of nodes and values made inside the block (e.g. "grad/")."""
        saved = self._scope
        self._scope = saved + prefix
        try:
            yield
        finally:
            self._scope = saved

    def unique_name(self, base: str) -> str:
        """A value/node name not used yet in this graph, stable for the same build order."""
        base = self._scope + base
        if base not in self._values and base not in self._node_names:
            return base
        while True:
            name = f"{base}_{next(self._counter)}"
            if name not in self._values and name not in self._node_names:
                return name

    def value(self, name: str) -> Value:
        """The value called `name`; IRError naming it if there is none."""
        try:
            return self._values[name]
        except KeyError:
            raise IRError(f"graph {self.name!r} has no value named {name!r}") from None

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self) -> Iterable[Value]:
        return self._values.values()

    def _new_value(self, name: str, dtype: Any, shape: Shape) -> Value:
        if name in self._values:
            raise IRError(f"value name {name!r} is used twice in graph {self.name!r}; "
                          "names must be unique")
        v = Value(self, name, dtype, shape)
        self._values[name] = v
        return v

    # ---- building ---------------------------------------------------------------------------
    def add_input(self, name: str, dtype: Any, shape: Shape) -> Value:
        """Declare a graph input."""
        v = self._new_value(name, dtype, shape)
        self.inputs.append(v)
        return v

    def add_initializer(self, name: str, array: np.ndarray) -> Value:
        """Add a named constant tensor (a parameter or a constant)."""
        array = np.asarray(array)
        v = self._new_value(name, array.dtype, array.shape)
        v.const = array
        self.initializers[name] = v
        return v

    def constant(self, data: Any, dtype: Any = None) -> Value:
        """A constant as an initializer; small ones are shared by value (one `const` per number)."""
        array = np.asarray(data, dtype=dtype)
        key = None
        if array.size <= 8:
            key = (array.dtype.str, array.shape, array.tobytes())
            cached = self._const_cache.get(key)
            if cached is not None and cached.graph is self and cached.name in self.initializers:
                return cached
        v = self.add_initializer(self.unique_name("const"), array)
        if key is not None:
            self._const_cache[key] = v
        return v

    def add_node(self, op_type: str, inputs: Sequence[Value | None],
                 attributes: dict[str, Any] | None, output_types: Sequence[OutputType], *,
                 name: str | None = None, output_names: Sequence[str] | None = None,
                 domain: str = "") -> Node:
        """Append a node with one output per entry of `output_types` ((dtype, shape) each).

        The IR takes the types as given; `irkit.ops.apply` (what calling an op does) infers
        them. Attributes that are None are dropped, as are absent (None) trailing inputs.
        """
        attributes = {k: v for k, v in (attributes or {}).items() if v is not None}
        node_name = self.unique_name(name or op_type)
        for v in inputs:
            if v is not None and v.graph is not self:
                raise IRError(f"node {node_name!r} ({op_type}) reads value {v.name!r} "
                              f"of another graph; build every op of a function in one graph")
        if output_names is not None and len(output_names) != len(output_types):
            raise IRError(f"node {node_name!r} ({op_type}): {len(output_names)} output names "
                          f"for {len(output_types)} outputs")
        node = Node(self, node_name, op_type, domain, attributes)
        node.inputs = list(inputs)
        while node.inputs and node.inputs[-1] is None:
            node.inputs.pop()
        names = list(output_names) if output_names is not None else [
            self._output_name(node_name, i) for i in range(len(output_types))]
        taken = [n for n in names if n in self._values]
        if taken or len(set(names)) != len(names):
            raise IRError(f"value name {(taken or names)[0]!r} is used twice in graph "
                          f"{self.name!r}; names must be unique")
        self._node_names.add(node_name)
        for out_name, (dtype, shape) in zip(names, output_types, strict=True):
            out = self._new_value(out_name, dtype, shape)
            out.producer = node
            node.outputs.append(out)
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.append((node, i))
        self.nodes.append(node)
        return node

    def _output_name(self, node_name: str, index: int) -> str:
        name = node_name if index == 0 else f"{node_name}.{index}"
        if name in self._values:
            saved, self._scope = self._scope, ""
            name = self.unique_name(name)
            self._scope = saved
        return name

    # ---- editing ----------------------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        """Make every reader of `old` (nodes and graph outputs) read `new` instead."""
        if new is old:  # nothing to do; the loop below would clear `old.uses`
            return
        for node, i in list(old.uses):
            node.inputs[i] = new
            new.uses.append((node, i))
        old.uses.clear()
        if old in self.outputs:  # constant time: replacing in every call made passes quadratic
            self.outputs = [new if v is old else v for v in self.outputs]

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        """Point input `index` of `node` at `value`, keeping use lists true."""
        old = node.inputs[index]
        if old is not None:
            old.uses.remove((node, index))
        node.inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads (IRError otherwise)."""
        for out in node.outputs:
            if out.uses or out in self.outputs:
                raise IRError(f"cannot remove node {node.name!r} ({node.op_type}): its output "
                              f"{out.name!r} is still used")
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.remove((node, i))
        for out in node.outputs:
            del self._values[out.name]
        self._node_names.discard(node.name)
        node.graph = None  # a removed node belongs to no graph (`holds` is O(1))
        self._removed += 1  # `nodes` drops it when next read

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove many nodes at once, in time linear in the graph (IRError, and nothing removed,
        if a node outside the set or a graph output still reads one of their outputs)."""
        doomed = {id(n): n for n in nodes}
        outputs = {id(v) for v in self.outputs}
        for node in doomed.values():
            for out in node.outputs:
                if id(out) in outputs or any(id(u) not in doomed for u, _ in out.uses):
                    raise IRError(f"cannot remove node {node.name!r} ({node.op_type}): its "
                                  f"output {out.name!r} is still used")
        touched = {id(v): v for n in doomed.values() for v in n.inputs if v is not None}
        for v in touched.values():
            v.uses = [(u, i) for u, i in v.uses if id(u) not in doomed]
        for node in doomed.values():
            for out in node.outputs:
                del self._values[out.name]
            self._node_names.discard(node.name)
            node.graph = None
        self.nodes = [n for n in self.nodes if id(n) not in doomed]

    def remove_initializer(self, name: str) -> None:
        """Remove an unused initializer."""
        v = self.initializers[name]
        if v.uses or v in self.outputs:
            raise IRError(f"cannot remove initializer {name!r}: it is still used")
        del self.initializers[name]
        del self._values[name]

    def remove_input(self, value: Value) -> None:
        """Remove an unused graph input."""
        if value.uses or value in self.outputs:
            raise IRError(f"cannot remove input {value.name!r}: it is still used")
        self.inputs.remove(value)
        del self._values[value.name]

    def promote_initializer_to_input(self, name: str) -> Value:
        """Turn an initializer into a graph input of the same name (keeps its uses)."""
        v = self.initializers.pop(name)
        v.const = None
        self.inputs.append(v)
        return v

    def rename_value(self, value: Value, new_name: str) -> None:
        """Rename a value (e.g. to give a graph output a public name)."""
        if new_name == value.name:
            return
        if new_name in self._values:
            raise IRError(f"cannot rename {value.name!r} to {new_name!r}: the name is taken")
        del self._values[value.name]
        if value.name in self.initializers:
            del self.initializers[value.name]
            self.initializers[new_name] = value
        value.name = new_name
        self._values[new_name] = value

    def holds(self, node: Node) -> bool:
        """Whether `node` is one of this graph's nodes (not removed), in constant time."""
        return node.graph is self

    # ---- analysis ---------------------------------------------------------------------------
    def toposort(self) -> None:
        """Reorder `nodes` topologically (stable); IRError naming a node on a cycle if any."""
        order: list[Node] = []
        state: dict[int, int] = {}
        producer_of = {id(n): n for n in self.nodes}
        for root in self.nodes:
            if state.get(id(root)) == 2:
                continue
            stack: list[tuple[Node, Iterator[Value | None]]] = [(root, iter(root.inputs))]
            state[id(root)] = 1
            while stack:
                node, it = stack[-1]
                for v in it:
                    p = v.producer if v is not None else None
                    if p is None or id(p) not in producer_of:
                        continue
                    if state.get(id(p)) == 1:
                        raise IRError(f"graph {self.name!r} has a cycle through node {p.name!r} "
                                      f"({p.op_type}); a graph must be acyclic")
                    if state.get(id(p)) != 2:
                        state[id(p)] = 1
                        stack.append((p, iter(p.inputs)))
                        break
                else:
                    stack.pop()
                    state[id(node)] = 2
                    order.append(node)
        self.nodes = order

    def verify(self) -> None:
        """Check every IR invariant; raise IRError naming the first broken one. (That every
        op is one irkit knows is checked by `irkit.ops.verify`.)"""
        verify_graph(self)

    def copy(self) -> Graph:
        """A deep copy (values, nodes, initializer data shared read-only)."""
        g = Graph(self.name)
        g.metadata = dict(self.metadata)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.name, v.dtype, v.shape)
        for name, v in self.initializers.items():
            vmap[id(v)] = g.add_initializer(name, v.const)
        for n in self.nodes:
            new = g.add_node(n.op_type, [vmap[id(v)] if v is not None else None for v in n.inputs],
                             n.attributes, [(o.dtype, o.shape) for o in n.outputs], name=n.name,
                             output_names=[o.name for o in n.outputs], domain=n.domain)
            for o, no in zip(n.outputs, new.outputs):
                vmap[id(o)] = no
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}: {len(self.inputs)} inputs, {len(self.initializers)} "
                f"initializers, {len(self.nodes)} nodes, {len(self.outputs)} outputs)")

    def _repr_html_(self) -> str:
        """Jupyter's display: a drawing of the nodes (irkit/ir_display.py)."""
        from irkit.ir_display import graph_svg
        return graph_svg(self)
