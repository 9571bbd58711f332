"""The torch runtime's op table and what its op modules share: `TORCH_OPS` (ONNX op type ->
`fn(node, *inputs) -> output(s)`), the `op` decorator that fills it, ONNX -> torch dtypes and
small argument helpers. The ops themselves are in `torch_ops` and `torch_conv_ops`; importing
`irkit.runtimes.torch_ops` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import torch

from irkit.errors import UnsupportedOpError
from irkit.ir import Node

OpFn = Callable[..., Any]
TORCH_OPS: dict[str, OpFn] = {}

# ONNX TensorProto element types -> torch dtypes (strings and 4-bit types have none)
_T = onnx.TensorProto
TORCH_DTYPES: dict[int, torch.dtype] = {
    _T.FLOAT: torch.float32, _T.DOUBLE: torch.float64, _T.FLOAT16: torch.float16,
    _T.BFLOAT16: torch.bfloat16, _T.INT8: torch.int8, _T.INT16: torch.int16,
    _T.INT32: torch.int32, _T.INT64: torch.int64, _T.UINT8: torch.uint8, _T.UINT16: torch.uint16,
    _T.UINT32: torch.uint32, _T.UINT64: torch.uint64, _T.BOOL: torch.bool,
    _T.COMPLEX64: torch.complex64, _T.COMPLEX128: torch.complex128,
}


def torch_dtype(onnx_type: int, node: Node | None = None) -> torch.dtype:
    """The torch dtype of an ONNX element type (UnsupportedOpError naming the node if none)."""
    if onnx_type not in TORCH_DTYPES:
        where = f" (node {node.name!r})" if node is not None else ""
        name = onnx.TensorProto.DataType.Name(onnx_type) if onnx_type in \
            onnx.TensorProto.DataType.values() else str(onnx_type)
        raise UnsupportedOpError(f"ONNX type {name}{where} has no torch dtype; the torch runtime "
                                 "cannot run it, use onnxruntime")
    return TORCH_DTYPES[onnx_type]


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Decorator: register `fn` for each op type in `names`."""
    def register(fn: OpFn) -> OpFn:
        for name in names:
            TORCH_OPS[name] = fn
        return fn
    return register


def ints_of(t: torch.Tensor | None) -> list[int] | None:
    """The values of an int tensor input as a list (None for a missing input)."""
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def positive_axis(axis: int, rank: int) -> int:
    """A negative ONNX axis counted from the front."""
    return axis + rank if axis < 0 else axis
