"""irkit's exceptions. Every message names the node, op, layer or file at fault and what to do."""

from __future__ import annotations


def escape(text: object) -> str:
    """`text` with every non-printable character (ESC, CR, BEL, OSC and CSI introducers, bidi
    controls, ...) written as a Python escape, so printing it cannot drive a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def json_text(document: object, indent: int | None = None) -> str:
    """`document` as valid JSON: NaN and infinities (which json.dumps writes as bare NaN,
    Infinity: not JSON) become null, numpy numbers plain numbers."""
    import json
    import math

    def clean(v):
        if hasattr(v, "dtype") and getattr(v, "shape", None) == ():  # a numpy scalar
            v = v.item()
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(document), indent=indent, allow_nan=False, default=str)


# onnxruntime's error text: its status prefix, its source file and line, a C++ function
# signature (with an optional return type), the text of a failed check ("x == y was false.")
_CPP_NAME = r"(?:\w+(?:<[^<>]*>)?::)+~?\w+"  # onnxruntime::Dropout<T1, T2>::Compute
_ORT_PARTS = [
    r"\[ONNXRuntimeError\] : \d+ : \w+ : ",
    r"\S*onnxruntime(?:_src)?/\S+:\d+ ",
    rf"(?:{_CPP_NAME}(?:<[^<>]*>)?[\s*&]+)?{_CPP_NAME}\((?:[^()]|\([^()]*\))*\)"
    r"(?: const)?(?: \[with [^\]]*\])?\s*",
    r"(?<=Status Message: )[^.]*? was false\.\s*",
]


def ort_message(error: BaseException) -> str:
    """The first line of an onnxruntime error without its internals (status prefix, source
    path, C++ function names, failed-check text): what irkit's one line may quote. The one
    place onnxruntime's errors become irkit's text."""
    import re
    text = str(error).strip()
    text = text.splitlines()[0][:2000] if text else type(error).__name__
    for part in _ORT_PARTS:
        text = re.sub(part, "", text)
    text = re.sub(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' "
                  r"Status Message: ", r"node '\2' (\1): ", text)
    return " ".join(text.split()) or type(error).__name__


def printable(name: object) -> str:
    """A name from a file, quoted and escaped for a message: 'conv\\x1b[2J'."""
    return repr(str(name))


class IrkitError(Exception):
    """Base class of every error irkit raises on purpose (the CLI prints these in one line)."""


class IRError(IrkitError):
    """The graph breaks an IR invariant (dangling value, duplicate name, cycle, ...)."""


class ShapeError(IrkitError):
    """Shapes or dtypes of an op's inputs do not fit together."""


class UnsupportedOpError(IrkitError):
    """An op irkit does not know, or one without a gradient rule where one is needed."""


class DataError(IrkitError):
    """Bad training data: NaN, labels out of range, wrong columns, unknown dataset."""


class SpecError(IrkitError):
    """A malformed model recipe (TOML)."""


class ModelFileError(IrkitError):
    """A model file that cannot be read or is not valid ONNX."""


class RuntimeUnavailableError(IrkitError):
    """A requested device or execution provider is not available."""


class TraceError(IrkitError):
    """A traced value used where data is needed (a Python branch, float(), numpy on it) or
    after its trace ended."""
