"""ONNX in and out of irkit's IR: the public facade.

    to_onnx(graph, opset) -> ModelProto      save(graph, path, opset)
    from_onnx(proto) -> Graph                 load(path) -> Graph      load_proto(path)
    from_exported(proto) -> Graph             import_notes(graph) -> [line]
    model_bytes(graph) -> bytes               (irkit's own writer; no onnx import)
    file_parts(graph, path)                   (its files: weights beyond 1 GiB in PATH.data)
    check_model_outputs(outputs, inputs)      (no output, nor its PATH.data, is read)

A graph that holds what opset 17 cannot (float8, int4, ... values; Cast saturate; scatter
max/min: `_needs.holds_newer`) is written through onnx instead, at the lowest opset that holds
it (`to_onnx`, `model_files_for`); the others never import onnx.

Behind it, private modules: `_wire` (the protobuf writer, byte-equal to onnx.helper's),
`_validate` (what a file from a stranger must satisfy before import and export), `_sizes`
(what running it would allocate, from shapes), `_compat`
(newer opsets rewritten to 17, import-time constant folding), `_external` (external data read
inside the model's folder), `_locations` (the external data files a model names, read
without loading it), `_exported` (what another tool's exporter changed: copies tied again,
parameters folded away recorded), `_read` (reading a file: caps that need no onnx import
first) and `_convert` (IR <-> ModelProto). Names load on first use, so
writing bytes for onnxruntime never imports the onnx package.
"""

from __future__ import annotations

import importlib
from typing import Any

from irkit.ir import Graph
from irkit.onnx_io import _wire
from irkit.onnx_io._needs import check_opset, holds_newer
from irkit.onnx_io._wire import IR_VERSION, IRKIT_OPSET

# public name -> the private module that defines it (loaded when first asked for)
_LAZY = {name: "irkit.onnx_io._convert" for name in (
    "DEFAULT_OPSET", "MIN_OPSET", "convert_opset", "from_onnx", "model_files_for", "save",
    "to_onnx", "with_dynamic_batch")}
_LAZY.update({name: "irkit.onnx_io._read" for name in ("load", "load_proto")})
_LAZY["check_run_sizes"] = "irkit.onnx_io._sizes"
_LAZY.update({name: "irkit.onnx_io._exported" for name in ("from_exported", "import_notes")})
_LAZY["restore_detached"] = "irkit.onnx_io._external"
_LAZY.update({name: "irkit.onnx_io._locations" for name in (
    "check_model_outputs", "external_data_files", "files_read")})
_LAZY.update({name: "irkit.onnx_io._validate" for name in (
    "MAX_OPSET", "check_schemas", "validate_model")})


def model_bytes(graph: Graph) -> bytes:
    """The graph as ONNX bytes: irkit's writer at opset 17 (`_wire.model_bytes`), or, when it
    holds something newer, `to_onnx` at the lowest opset that holds it."""
    if holds_newer(graph):
        return importlib.import_module("irkit.onnx_io._convert").to_onnx(
            graph).SerializeToString()
    return _wire.model_bytes(graph)


def file_parts(graph: Graph, path: str) -> list[tuple[str, Any]]:
    """The files of `graph` written as the model `path` (`_wire.file_parts`; through
    `model_files_for` at the lowest opset that holds it when it holds something newer)."""
    if holds_newer(graph):
        return importlib.import_module("irkit.onnx_io._convert").model_files_for(graph,
                                                                                 path)[0]
    return _wire.file_parts(graph, path)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'irkit.onnx_io' has no attribute {name!r}")


__all__ = ["IRKIT_OPSET", "IR_VERSION", "check_opset", "file_parts", "holds_newer", "model_bytes",
           *sorted(_LAZY)]
