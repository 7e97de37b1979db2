"""No case lost to CUDA out-of-memory: an OOM injected into each stage is retried, then run on the CPU,
the case is still written, identical to the normal result, and the fallback is reported."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataclasses import replace

import inference.api as api
from inference.cli import main
from inference.engines.torch_engine.engine import TorchEngine, TorchStages
from inference.engines.torch_engine.oom import OutOfMemoryFallback, run_with_fallback
from inference.files.cases import Case
from inference.loading import load_model
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume, write_image

# The field of TorchStages each stage calls.
STAGE_FUNCTIONS = {"preprocess": "preprocess", "network": "predict_logits", "export": "export"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_preset(tmp_path_factory.mktemp("m") / "tiny", "tiny")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    write_image(d / "c1_0000.nii.gz", blob_volume((14, 44, 40), seed=2), (1.5, 1.5, 3.0))
    return d


@pytest.fixture(scope="module")
def reference(model_dir, case_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    result = api.segment_case(Case("c1", [case_dir / "c1_0000.nii.gz"]), out, load_model(model_dir))
    assert result.ok and not result.warnings
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result.output)))


def flaky_model(model_dir, stage: str, failures: int):
    """The model on a torch engine whose `stage` function raises CUDA OOM on its first `failures` calls;
    returns the model and the arguments of every call of that function."""
    name = STAGE_FUNCTIONS[stage]
    real = getattr(TorchStages(), name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(*args, **kwargs)
    model = load_model(model_dir)
    engine = TorchEngine(model.device, replace(TorchStages(), **{name: flaky}))
    return replace(model, engine=engine), calls


@pytest.mark.parametrize("stage", ["preprocess", "network", "export"])
@pytest.mark.parametrize("failures, then", [(1, {"preprocess": "the cache emptied", "network": "batch_size 1",
                                                 "export": "one class per chunk"}),
                                            (2, "the CPU")])
def test_oom_in_a_stage_still_writes_the_case(tmp_path, model_dir, case_dir, reference, stage, failures, then):
    model, calls = flaky_model(model_dir, stage, failures)
    result = api.segment_case(Case("c1", [case_dir / "c1_0000.nii.gz"]), tmp_path, model)
    assert result.ok, result.error
    assert len(calls) == failures + 1
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(result.output))), reference)
    assert len(result.warnings) == failures
    expected = then if isinstance(then, str) else then[stage]
    last = result.warnings[-1]
    assert last.startswith(f"{case_dir / 'c1_0000.nii.gz'}: {stage}: CUDA out of memory with ")
    assert "Tried to allocate 2.00 GiB (injected)" in last
    assert f"retrying with {expected}" in last, last
    if stage == "network" and failures == 1:   # the retry really ran one tile per call
        assert calls[1][1]["batch_size"] == 1
    if stage == "export" and failures == 1:    # ... and exported one class at a time
        assert calls[1][0][3] == 1


def test_cli_reports_the_fallback(tmp_path, model_dir, case_dir, reference, capsys):
    model, _ = flaky_model(model_dir, "network", 2)
    code = main(["-i", str(case_dir), "-o", str(tmp_path), "-m", str(model_dir), "--device", "cpu"], model=model)
    out, err = capsys.readouterr()
    assert code == 0 and "c1: ok" in out
    assert "warning: " in err and "network: CUDA out of memory" in err and "retrying with the CPU" in err
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c1.nii.gz"))), reference)


def test_oom_on_every_attempt_fails_only_that_case(tmp_path, model_dir, case_dir):
    model, _ = flaky_model(model_dir, "export", 3)
    result = api.segment_case(Case("c1", [case_dir / "c1_0000.nii.gz"]), tmp_path, model)
    assert not result.ok and result.error.startswith(f"{case_dir / 'c1_0000.nii.gz'}: could not be processed: ")
    assert "CUDA out of memory" in result.error and "OutOfMemoryError" not in result.error
    assert list(tmp_path.iterdir()) == []


def test_run_with_fallback_logs_and_propagates_other_errors(caplog):
    def oom():
        raise torch.cuda.OutOfMemoryError("out of memory")
    with pytest.warns(OutOfMemoryFallback, match=r"x.nii.gz: export: CUDA out of memory with a \(out of memory\); freed cached memory, retrying with b"):
        assert run_with_fallback("export", [("a", oom), ("b", lambda: 7)], "x.nii.gz") == 7
    assert "retrying with b" in caplog.text
    with pytest.raises(ValueError):  # not an OOM: no fallback
        run_with_fallback("export", [("a", lambda: int("x")), ("b", lambda: 7)])


def test_cli_refuses_a_negative_budget(tmp_path, model_dir, case_dir, capsys):
    assert main(["-i", str(case_dir), "-o", str(tmp_path), "-m", str(model_dir), "--gpu-memory-budget", "-1"]) == 2
    assert "--gpu-memory-budget must be >= 0" in capsys.readouterr().err
