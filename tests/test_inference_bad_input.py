"""Bad input: a clear message naming the file, the other cases still processed, a non-zero exit code
when any case failed, and no partial output file left behind."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from testsupport.model_folder import write_preset
from testsupport.predictor_cli import outputs, run
from testsupport.nnunet_reference import blob_volume, write_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture
def good_case(tmp_path) -> Path:
    inputs = tmp_path / "in"
    write_image(inputs / "good_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    return inputs


def test_missing_input_folder(tmp_path, model_dir, capsys):
    code, _, err = run(["-i", tmp_path / "nope", "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 2
    assert f"{tmp_path / 'nope'}: input folder not found" in err


def test_empty_input_folder_exits_cleanly(tmp_path, model_dir, capsys):
    (tmp_path / "in").mkdir()
    code, out, _ = run(["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 0
    assert "nothing to do" in out
    assert outputs(tmp_path / "out") == []


def test_wrongly_named_files_are_skipped_with_a_warning(tmp_path, model_dir, good_case, capsys):
    (good_case / "notes.txt").write_text("hello")
    write_image(good_case / "other.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    code, out, err = run(["-i", good_case, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 0
    assert f"{good_case / 'notes.txt'}: not named <case>_0000.nii.gz; skipped" in err
    assert f"{good_case / 'other.nii.gz'}: not named" in err
    assert outputs(tmp_path / "out") == ["good.nii.gz"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file_fails_alone(tmp_path, model_dir, good_case, capsys, damage):
    bad = good_case / "bad_0000.nii.gz"
    if damage == "truncated":
        data = (good_case / "good_0000.nii.gz").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    code, out, err = run(["-i", good_case, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    assert f"bad: FAILED: {bad}: " in err
    assert ("truncated" in err) if damage == "truncated" else ("not a NIfTI image" in err)
    assert "good: ok" in out
    assert outputs(tmp_path / "out") == ["good.nii.gz"]


@pytest.mark.parametrize("dims", [2, 4])
def test_not_a_3d_volume(tmp_path, model_dir, good_case, capsys, dims):
    bad = good_case / "flat_0000.nii.gz"
    if dims == 2:
        image = sitk.GetImageFromArray(np.ones((40, 40), np.float32))
    else:
        volume = sitk.GetImageFromArray(np.ones((12, 40, 40), np.float32))
        image = sitk.JoinSeries([volume, volume])
    sitk.WriteImage(image, str(bad))
    code, out, err = run(["-i", good_case, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    assert f"{bad}: a {dims}D image; a 3D volume is required" in err
    assert outputs(tmp_path / "out") == ["good.nii.gz"]


def test_missing_channel_of_multichannel_model(tmp_path, capsys):
    model = write_preset(tmp_path / "m2", "tiny", num_input_channels=2)
    inputs = tmp_path / "in"
    write_image(inputs / "full_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    write_image(inputs / "full_0001.nii.gz", blob_volume((12, 40, 40), seed=3), (1.5, 1.5, 3.0))
    write_image(inputs / "half_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model], capsys)
    assert code == 1
    assert f"{inputs / 'half_0001.nii.gz'}: missing input channel file" in err
    assert "full: ok" in out
    assert outputs(tmp_path / "out") == ["full.nii.gz"]


def test_nan_and_inf_are_zeroed_with_a_warning(tmp_path, model_dir):
    from inference.api import segment_array
    from inference.loading import load_model
    volume = blob_volume((12, 40, 40))
    volume[5, 10:12, 10:12] = np.nan
    volume[6, 20, 20] = np.inf
    model = load_model(model_dir)
    with pytest.warns(UserWarning, match="scan.nii.gz: 5 NaN/Inf voxels set to 0"):
        labels = segment_array(volume[None], (3.0, 1.5, 1.5), model, source="scan.nii.gz")
    clean = volume.copy()
    clean[~np.isfinite(clean)] = 0
    assert np.array_equal(labels, segment_array(clean[None], (3.0, 1.5, 1.5), model))


def test_nan_voxels_in_a_file_still_segment(tmp_path, model_dir, capsys):
    volume = blob_volume((12, 40, 40))
    volume[5, 10:12, 10:12] = np.nan
    inputs = tmp_path / "in"
    write_image(inputs / "nan_0000.nii.gz", volume, (1.5, 1.5, 3.0))
    code, out, _ = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 0 and "nan: ok" in out
    assert sitk.ReadImage(str(tmp_path / "out" / "nan.nii.gz")).GetSize() == (40, 40, 12)


@pytest.mark.parametrize("missing", ["plans.json", "dataset.json", "fold_all/checkpoint_final.pth"])
def test_model_folder_missing_a_file(tmp_path, good_case, capsys, missing):
    model = write_preset(tmp_path / "m", "tiny")
    (model / missing).unlink()
    code, _, err = run(["-i", good_case, "-o", tmp_path / "out", "-m", model], capsys)
    assert code == 2
    assert str(model) in err and ("missing" in err or "no fold_" in err)
    assert outputs(tmp_path / "out") == []


def test_unknown_checkpoint_and_configuration(tmp_path, model_dir, good_case, capsys):
    code, _, err = run(["-i", good_case, "-o", tmp_path / "o1", "-m", model_dir, "--checkpoint", "best.pth"],
                       capsys)
    assert code == 2 and "no fold_<f>/best.pth found" in err
    code, _, err = run(["-i", good_case, "-o", tmp_path / "o2", "-m", model_dir, "-f", "3"], capsys)
    assert code == 2 and f"{model_dir / 'fold_3' / 'checkpoint_final.pth'}: checkpoint not found" in err
    code, _, err = run(["-i", good_case, "-o", tmp_path / "o3", "-m", model_dir, "--configuration", "2d"],
                       capsys)
    assert code == 2 and "configuration '2d' not found" in err


def test_output_folder_not_usable(tmp_path, model_dir, good_case, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["-i", good_case, "-o", blocker / "out", "-m", model_dir], capsys)
    assert code == 2
    assert f"{blocker / 'out'}: cannot create output folder" in err


def test_timings_json_and_output_permissions(tmp_path, model_dir, good_case, capsys):
    code, out, _ = run(["-i", good_case, "-o", tmp_path / "out", "-m", model_dir,
                        "--timings", tmp_path / "t.json"], capsys)
    assert code == 0
    timings = json.loads((tmp_path / "t.json").read_text())
    assert set(timings["startup"]) == {"imports", "model_load"}
    assert list(timings["cases"][0]["seconds"]) == ["read", "preprocess", "network", "export", "write"]
    assert (tmp_path / "out" / "good.nii.gz").stat().st_mode & 0o777 == 0o644
    written = sitk.ReadImage(str(tmp_path / "out" / "good.nii.gz"))
    assert written.GetPixelID() == sitk.sitkUInt8
