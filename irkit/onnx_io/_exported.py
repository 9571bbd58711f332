"""Importing a model another tool exported: what its exporter changed, read from the file.

torch's dynamo exporter runs onnxscript's optimizer by default (`torch.onnx.export(...,
optimize=True)`), and that optimizer removes some of torch's parameters from the file:

1. it folds each BatchNorm into the Conv (or Gemm) before it, so the convolution's weight
   and bias are products of the conv's and the BatchNorm's parameters and running
   statistics, and neither torch tensor is in the file (the node carries the rewriter's
   rule, `pkg.onnxscript.rewriter.rule_name`, FuseBatchNormIntoConv);
2. it folds a parameter that is only gathered at fixed positions (BERT's
   position_embeddings and GPT-2's wpe, read at positions 0..T-1 for a static length T) into
   a new constant, the T rows read;
3. it unties a tied weight (irkit.passes.tie_copies ties it back).

The file says so itself: the exporter records torch.export's graph signature (every
parameter by its torch name and its graph name, graph metadata
`pkg.torch.export.ExportedProgram.graph_signature`) and, on each node, the FX node it came
from (`pkg.torch.onnx.fx_node`, which names the parameters it reads); the optimizer marks a
node a rewrite rule made (`pkg.onnxscript.rewriter.rule_name`) and a constant it folded
(`pkg.onnxscript.optimizer.folded_from`, the values it was computed from). A torch parameter
is folded away when a folded constant was computed from it and other values (2.: a
position embedding's rows at fixed positions; a constant computed from one tensor alone is
that tensor transposed or reshaped: a Linear's weight, which trains as torch's, or the
untied copy of a table, case 3.) and it is no longer in the file, or a node made by a folding
rule reads it, by its FX node or as an input (1.: the BatchNorm's parameters and the
convolution's weight, whose name the folded tensor keeps). `folded_parameters` lists them,
and the import records them under META_FOLDED, which `irkit inspect` and `irkit train` print
with the fix (`optimize=False`). A file without that metadata (the TorchScript exporter,
other tools, irkit's own exports) gives none; an irkit export of a folded file keeps the
record in its metadata. A tied parameter's second name (GPT-2's wte beside lm_head), which
the signature lists and no node reads, is not folded.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx

from irkit.ir import Graph
from irkit.signature import META_FOLDED, META_TIED

SIGNATURE = "pkg.torch.export.ExportedProgram.graph_signature"
FX_NODE, RULE = "pkg.torch.onnx.fx_node", "pkg.onnxscript.rewriter.rule_name"
FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"
FOLDING_RULES = ("FuseBatchNormInto",)  # rules whose node holds other nodes' parameters
_PARAMETER = re.compile(r"^\s*(\w+): PARAMETER target='([^']*)'", re.M)
_ARGUMENT = re.compile(r"%(\w+)")
_QUOTED = re.compile(r"'([^']*)'")
FIX = "torch.onnx.export(..., optimize=False)"


def folded_parameters(model: onnx.ModelProto) -> list[str]:
    """The torch parameters (torch names) the exporter folded into other tensors or
    constants, by the file's own metadata (the module docstring); [] without it."""
    meta = {p.key: p.value for p in model.graph.metadata_props}
    params = dict(_PARAMETER.findall(meta.get(SIGNATURE, "")))  # graph name -> torch name
    if not params:
        return []
    g = model.graph
    targets, found = set(params.values()), set()
    kept = targets & {t.name for t in g.initializer}  # e.g. a tied table, read as it is
    for value in [*g.value_info, *g.initializer, *g.input]:  # metadata of values
        sources = set(_QUOTED.findall(
            {p.key: p.value for p in value.metadata_props}.get(FOLDED_FROM, "")))
        if len(sources) > 1:  # from one tensor alone: that tensor, transposed (BERT's Linear)
            found |= sources & targets - kept
    for node in g.node:
        node_meta = {p.key: p.value for p in node.metadata_props}
        if any(r in node_meta.get(RULE, "") for r in FOLDING_RULES):
            read = set(_ARGUMENT.findall(node_meta.get(FX_NODE, "")))
            found |= {params[n] for n in read if n in params} | (set(node.input) & targets)
    return [t for t in params.values() if t in found]


def from_exported(model: onnx.ModelProto,
                  detached: dict[str, np.ndarray | None] | None = None,
                  original: onnx.ModelProto | None = None) -> Graph:
    """`from_onnx` of a model another tool exported, with what its exporter changed undone
    where it can be (untied copies tied again: irkit.passes.tie_copies) and recorded where it
    cannot (META_FOLDED: the parameters folded away, read from `original`, the file as read,
    when `model` is an edited copy: with_dynamic_batch drops the value_info that holds it)."""
    from irkit.onnx_io._convert import from_onnx
    from irkit.passes.tie_copies import tie_copies
    folded = folded_parameters(original if original is not None else model)
    graph = from_onnx(model, detached)
    tie_copies(graph)
    if folded:
        graph.metadata[META_FOLDED] = json.dumps(folded)
    return graph


def _recorded(graph: Graph, key: str) -> list:
    """The JSON list the metadata `key` holds; [] if none or damaged (a stranger's file)."""
    try:
        found = json.loads(graph.metadata.get(key) or "[]")
    except (json.JSONDecodeError, RecursionError):
        return []
    return found if isinstance(found, list) else []


def import_notes(graph: Graph) -> list[str]:
    """One line for each thing the import found the exporter changed: the copies tied again
    and the parameters folded away (with the fix); [] when there is none."""
    notes = []
    tied = [t for t in _recorded(graph, META_TIED) if isinstance(t, list) and len(t) == 3]
    if tied:
        shown = ", ".join(f"{c} = Transpose({k})" if t else f"{c} = {k}" for c, k, t in tied)
        notes.append(f"tied: {shown} (the exporter's untied copies of a tied weight; they "
                     "train as one tensor, as in torch)")
    folded = [str(f) for f in _recorded(graph, META_FOLDED)]
    if folded:
        shown = ", ".join(folded[:3]) + (f" and {len(folded) - 3} more" if len(folded) > 3
                                         else "")
        what = "1 torch parameter" if len(folded) == 1 else f"{len(folded)} torch parameters"
        notes.append(f"folded: the exporter's optimizer folded {what} ({shown}) into other "
                     "tensors or constants (a name kept may hold folded values: a Conv weight "
                     "with its BatchNorm inside), which train in their place; to train "
                     f"torch's own, export with {FIX}")
    return notes
