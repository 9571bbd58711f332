"""The onnxruntime runtime: sessions on CPU or CUDA, IOBinding helpers for training loops."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import onnxruntime as ort

from irkit.errors import RuntimeUnavailableError, ShapeError
from irkit.ir import Graph
from irkit.onnx_io import to_onnx

DEVICES = ("cpu", "cuda", "auto")
_dlls_preloaded = False


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda'. 'cuda' fails with a clear message if unavailable; 'auto' falls back."""
    global _dlls_preloaded
    if device not in DEVICES:
        raise RuntimeUnavailableError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    reason = None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        reason = "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    else:
        if not _dlls_preloaded and hasattr(ort, "preload_dlls"):
            with _quiet():  # it prints each library it cannot find; the probe below decides
                try:
                    ort.preload_dlls()
                except Exception:  # missing CUDA libraries surface when the session starts
                    pass
            _dlls_preloaded = True
        if not _cuda_session_works():
            reason = "CUDA is not usable here (no GPU, or CUDA 13/cuDNN 9 libraries missing)"
    if reason is None:
        return "cuda"
    if device == "auto":
        print(f"irkit: {reason}; running on CPU", file=sys.stderr)
        return "cpu"
    raise RuntimeUnavailableError(f"--device cuda: {reason}; use --device cpu or auto")


_cuda_ok: bool | None = None


def _cuda_session_works() -> bool:
    global _cuda_ok
    if _cuda_ok is None:
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        ort.set_default_logger_severity(4)  # a failed provider load logs errors otherwise
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            s = ort.InferenceSession(m.SerializeToString(), so,
                                     providers=["CUDAExecutionProvider"])
            _cuda_ok = s.get_providers()[0] == "CUDAExecutionProvider"
        except Exception:
            _cuda_ok = False
        finally:
            ort.set_default_logger_severity(3)
    return _cuda_ok


@contextlib.contextmanager
def _quiet():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield


def make_session(model_bytes: bytes, device: str = "cpu",
                 threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for a resolved device ('cpu' or 'cuda'), warnings silenced."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(model_bytes, so, providers=providers)


class OrtGraph:
    """A compiled graph on onnxruntime: call it with numpy feeds."""

    def __init__(self, graph: Graph, device: str = "cpu", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.model = to_onnx(graph, check=False)
        self.session = make_session(self.model.SerializeToString(), self.device, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {v.name: v.dtype for v in graph.inputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ShapeError(f"missing inputs {missing}; feed every graph input")
        cast = {n: np.asarray(feeds[n], dtype=self._dtypes[n]) for n in self.input_names}
        try:
            return self.session.run(None, cast)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ShapeError(f"onnxruntime could not run the graph: {str(e).splitlines()[0]}") \
                from None


class OrtRuntime:
    """Runtime protocol for onnxruntime."""

    name = "onnxruntime"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def compile(self, graph: Graph) -> OrtGraph:
        return OrtGraph(graph, self.device)


def ortvalue(array: np.ndarray, device: str = "cpu") -> ort.OrtValue:
    """An OrtValue on `device`; 0-d arrays keep their 0-d shape (ortvalue_from_numpy would not)."""
    array = np.ascontiguousarray(array)
    if array.ndim == 0:
        v = ort.OrtValue.ortvalue_from_shape_and_type([], array.dtype, device, 0)
        v.update_inplace(array.reshape(()))
        return v
    return ort.OrtValue.ortvalue_from_numpy(array, device, 0)


def empty_ortvalue(shape, dtype, device: str = "cpu") -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype), device, 0)
