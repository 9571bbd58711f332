"""The one device rule (runtimes/base.py: choose_device), with a fake CUDA probe: no GPU is
needed to check what each device setting resolves to."""

from __future__ import annotations

import pytest
from irkit.runtimes.base import choose_device

from irkit.errors import RuntimeUnavailableError


class Probe:
    """A fake `cuda_unusable`: the reason it gives (None: CUDA works), and how often asked."""

    def __init__(self, reason: str | None) -> None:
        self.reason, self.calls = reason, 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.reason


def test_cpu_never_probes_cuda() -> None:
    probe = Probe("no GPU")
    assert choose_device("cpu", probe) == "cpu"
    assert probe.calls == 0


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_a_usable_gpu_is_chosen(device: str) -> None:
    probe = Probe(None)
    assert choose_device(device, probe) == "cuda"
    assert probe.calls == 1


def test_cuda_without_a_gpu_is_one_error_with_the_reason() -> None:
    with pytest.raises(RuntimeUnavailableError, match=r"device cuda: no GPU here; use device "
                       r"cpu or auto"):
        choose_device("cuda", Probe("no GPU here"))


def test_auto_without_a_gpu_falls_back_with_a_message(capsys) -> None:
    assert choose_device("auto", Probe("no GPU here")) == "cpu"
    err = capsys.readouterr().err
    assert err == "irkit: no GPU here; running on CPU\n"


def test_an_unknown_device_names_the_choices() -> None:
    with pytest.raises(RuntimeUnavailableError, match="unknown device 'tpu'; use one of cpu, "
                       "cuda, auto"):
        choose_device("tpu", Probe(None))


def test_onnxruntime_follows_the_rule(monkeypatch) -> None:
    """onnxruntime's device resolution is this rule with its own probe (faked here)."""
    import irkit.runtimes.onnxruntime as ort_runtime
    monkeypatch.setattr(ort_runtime, "_cuda_unusable", lambda: None)
    assert ort_runtime.resolve_device("cuda") == "cuda"
    monkeypatch.setattr(ort_runtime, "_cuda_unusable", lambda: "no CUDA provider")
    assert ort_runtime.resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeUnavailableError, match="no CUDA provider"):
        ort_runtime.resolve_device("cuda")


def test_the_reference_runtime_is_cpu_only() -> None:
    from irkit.runtimes import get_runtime
    assert get_runtime("reference", "cpu").device == "cpu"
    with pytest.raises(RuntimeUnavailableError, match="reference runtime runs on the CPU"):
        get_runtime("reference", "cuda")
