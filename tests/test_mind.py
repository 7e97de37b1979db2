"""MIND-SSC (inference.mind) against a plain float64 reference, and its properties."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _labeltransfer_volumes import make_subject

from inference.mind import (
    OFFSETS,
    PAIRS,
    auto_slab,
    descriptor_channels_from_dataset_json,
    mind_channel_names,
    mind_channels,
    mind_dataset_json_entry,
    mind_ssc,
)


def reference_mind(img: np.ndarray, radius: int, dilation: int, patch: str, sigma: float) -> np.ndarray:
    """Straightforward float64 MIND-SSC: a loop over the 12 pairs and over the patch offsets.

    The image is extended by edge replication; the pairs are the 12 pairs of the six face neighbours
    (+z, -z, +y, -y, +x, -x) that lie on different axes, in lexicographic order of those six.
    """
    img = img.astype(np.float64)
    six = [(dilation, 0, 0), (-dilation, 0, 0), (0, dilation, 0), (0, -dilation, 0),
           (0, 0, dilation), (0, 0, -dilation)]
    pairs = [(six[i], six[j]) for i, j in itertools.combinations(range(6), 2)
             if np.flatnonzero(six[i])[0] != np.flatnonzero(six[j])[0]]
    assert len(pairs) == 12
    h = dilation + radius
    pad = np.pad(img, h, mode="edge")
    Z, Y, X = img.shape

    def at(o):  # image value at x + o for every x of the volume
        return pad[h + o[0]:h + o[0] + Z, h + o[1]:h + o[1] + Y, h + o[2]:h + o[2] + X]

    t = np.arange(-radius, radius + 1)
    w1 = np.ones(len(t)) if patch == "box" else np.exp(-t ** 2 / (2 * sigma ** 2))
    w1 = w1 / w1.sum()
    dist = np.zeros((12, Z, Y, X))
    for k, (a, b) in enumerate(pairs):
        for p in itertools.product(t, t, t):
            wp = w1[p[0] + radius] * w1[p[1] + radius] * w1[p[2] + radius]
            pa = tuple(np.add(p, a))
            pb = tuple(np.add(p, b))
            dist[k] += wp * (at(pa) - at(pb)) ** 2
    dist -= dist.min(axis=0)
    var = dist.mean(axis=0)
    m = var.mean()
    var = np.clip(var, 1e-3 * m, 1e3 * m)
    return np.exp(-dist / var)


def _structured(shape=(9, 11, 10), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = 100.0 * ((z - 4) ** 2 + (y - 5) ** 2 / 2 + (x - 4) ** 2 < 12) + 30 * np.sin(x / 2.0)
    return img + 5 * rng.standard_normal(shape)


def test_pairs_are_the_twelve_orthogonal_pairs():
    assert len(PAIRS) == 12 and len(set(PAIRS)) == 12
    for i, j in PAIRS:
        assert np.dot(OFFSETS[i], OFFSETS[j]) == 0  # different axes


@pytest.mark.parametrize("radius,dilation,patch,sigma", [
    (1, 2, "box", 0.8), (1, 1, "box", 0.8), (0, 1, "box", 0.8), (2, 1, "gaussian", 0.8), (1, 3, "gaussian", 1.5)])
def test_matches_float64_reference(radius, dilation, patch, sigma):
    img = _structured()
    ref = reference_mind(img, radius, dilation, patch, sigma)
    got64 = mind_ssc(torch.from_numpy(img), radius, dilation, patch, sigma, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got64, ref, rtol=0, atol=1e-10)
    got32 = mind_ssc(torch.from_numpy(img).float(), radius, dilation, patch, sigma).numpy()
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref, rtol=0, atol=2e-5)


def test_accepts_numpy_and_integer_images():
    img = np.round(_structured()).astype(np.int16)
    ref = reference_mind(img, 1, 2, "box", 0.8)
    np.testing.assert_allclose(mind_ssc(img).numpy(), ref, atol=2e-5)


def test_range_and_per_voxel_max_is_one():
    ct, _ = make_subject("CT", size=(32, 28, 16))
    d = mind_ssc(torch.from_numpy(sitk.GetArrayFromImage(ct)))
    assert d.shape == (12, 16, 28, 32)
    assert float(d.min()) > 0.0 and float(d.max()) <= 1.0
    assert torch.equal(d.amax(dim=0), torch.ones(16, 28, 32))


@pytest.mark.parametrize("scale,offset", [(3.7, -120.0), (0.01, 5.0), (-2.0, 1000.0)])
def test_invariant_to_affine_intensity_changes(scale, offset):
    img = torch.from_numpy(_structured((10, 12, 11), seed=3))
    a = mind_ssc(img, dtype=torch.float64)
    b = mind_ssc(scale * img + offset, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("radius,dilation,patch", [(1, 2, "box"), (2, 1, "gaussian")])
@pytest.mark.parametrize("slab", [1, 2, 3, 7, 100])
def test_slabs_equal_whole_volume(radius, dilation, patch, slab):
    img = torch.from_numpy(_structured((13, 10, 9), seed=1)).float()
    whole = mind_ssc(img, radius, dilation, patch)
    torch.testing.assert_close(mind_ssc(img, radius, dilation, patch, slab=slab), whole, rtol=0, atol=1e-6)


def test_clamp_mean_is_global_in_slabs():
    # A volume whose halves differ in contrast by 10^4: a per-slab clamp mean would change the result.
    img = _structured((12, 10, 9), seed=2)
    img[6:] *= 1e-4
    ref = reference_mind(img, 1, 1, "box", 0.8)
    got = mind_ssc(torch.from_numpy(img), 1, 1, slab=3, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-10)


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u = u.ravel() - u.mean()
    v = v.ravel() - v.mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


@pytest.mark.parametrize("mri", ["T1", "T2"])
def test_ct_and_mri_descriptors_agree_far_better_than_intensities(mri):
    """Same subject imaged as CT and MRI (different, non-monotonic tissue intensity maps, own noise):
    inside the body the intensities are uncorrelated or anti-correlated, the descriptors correlate."""
    ct, _ = make_subject("CT", seed=0, noise=0.03)
    mr, _ = make_subject(mri, seed=1, noise=0.03)
    a, b = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(mr)
    body = sitk.GetArrayFromImage(make_subject("T1", noise=0.0)[0]) > 0
    intensity_corr = _corr(a[body], b[body])
    da, db = mind_ssc(torch.from_numpy(a)).numpy(), mind_ssc(torch.from_numpy(b)).numpy()
    mind_corr = float(np.mean([_corr(da[k][body], db[k][body]) for k in range(12)]))
    print(f"CT vs {mri}: intensity correlation {intensity_corr:.3f}, MIND (mean over 12 channels) {mind_corr:.3f}")
    assert abs(intensity_corr) < 0.35
    assert mind_corr > 0.55
    assert mind_corr > abs(intensity_corr) + 0.25


def test_constant_image_gives_ones():
    d = mind_ssc(torch.full((4, 5, 6), 7.0))
    assert torch.equal(d, torch.ones(12, 4, 5, 6))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="3-D"):
        mind_ssc(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="non-finite"):
        mind_ssc(torch.tensor([[[0.0, float("nan")]]]))
    with pytest.raises(ValueError, match="dilation"):
        mind_ssc(torch.zeros(3, 3, 3), dilation=0)
    with pytest.raises(ValueError, match="patch"):
        mind_ssc(torch.zeros(3, 3, 3), patch="disc")
    with pytest.raises(ValueError, match="slab"):
        mind_ssc(torch.zeros(3, 3, 3), slab=0)
    with pytest.raises(ValueError, match="only supported on CUDA"):
        mind_ssc(torch.zeros(3, 3, 3), device="cpu", dtype=torch.float16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_matches_cpu():
    img = torch.from_numpy(_structured((20, 24, 22), seed=4)).float()
    cpu = mind_ssc(img, slab=5)
    gpu16 = mind_ssc(img, slab=5, device="cuda", dtype=torch.float16)
    assert gpu16.dtype == torch.float16 and gpu16.device.type == "cuda"
    torch.testing.assert_close(gpu16.float().cpu(), cpu, rtol=0, atol=1e-2)
    assert torch.equal(gpu16.amax(0).float().cpu(), torch.ones(20, 24, 22))


def test_mind_channels_for_the_predictor():
    img = _structured((12, 10, 9), seed=5).astype(np.float32)
    params = {"radius": 1, "dilation": 2, "patch": "box", "sigma": 0.8}
    whole = mind_ssc(torch.from_numpy(img), **params)
    # a work budget of a few slices forces slab processing; the result does not change
    assert auto_slab((12, 10, 9), 1, 2, torch.float32, max_work_bytes=3 * 12 * 16 * 15 * 4 * 10) == 4
    assert auto_slab((12, 10, 9)) is None
    got = mind_channels(img[None], params, max_work_bytes=3 * 12 * 16 * 15 * 4 * 10)
    torch.testing.assert_close(got, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one input channel"):
        mind_channels(np.stack([img, img]), params)


# --- dataset.json convention -------------------------------------------------------------------------

def _mind_json(**entry):
    return {"channel_names": mind_channel_names(), "labels": {"background": 0, "liver": 1},
            "numTraining": 1, "file_ending": ".nii.gz", "mind": entry}


def test_dataset_json_convention(tmp_path):
    assert descriptor_channels_from_dataset_json({"channel_names": {"0": "MRI"}}) is None
    assert descriptor_channels_from_dataset_json(_mind_json()) == {
        "radius": 1, "dilation": 2, "patch": "box", "sigma": 0.8}
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(_mind_json(**mind_dataset_json_entry(2, 1, "gaussian", 0.8))))
    params = descriptor_channels_from_dataset_json(p)
    assert params == {"radius": 2, "dilation": 1, "patch": "gaussian", "sigma": 0.8}
    # the parameters are mind_ssc's keyword arguments
    assert mind_ssc(torch.rand(3, 4, 5), **params).shape == (12, 3, 4, 5)


def test_dataset_json_inconsistent_raises(tmp_path):
    bad = _mind_json()
    bad["channel_names"] = {"0": "MRI"}
    with pytest.raises(ValueError, match="channel_names must be"):
        descriptor_channels_from_dataset_json(bad)
    no_entry = _mind_json()
    del no_entry["mind"]
    with pytest.raises(ValueError, match="no 'mind' entry"):
        descriptor_channels_from_dataset_json(no_entry)
    with pytest.raises(ValueError, match="must be an object"):
        descriptor_channels_from_dataset_json({**_mind_json(), "mind": [1, 2]})
    with pytest.raises(ValueError, match="unknown 'mind' parameters"):
        descriptor_channels_from_dataset_json(_mind_json(radius=1, spacing=2))
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(_mind_json(patch="disc")))
    with pytest.raises(ValueError, match=str(p)):
        descriptor_channels_from_dataset_json(p)


@pytest.mark.parametrize("mri", ["t1", "t2"])
def test_phantom_ct_and_mri_descriptors_agree_far_better_than_intensities(mri):
    """The project's phantoms: one subject as CT and as MRI on one grid. Intensities disagree (here
    anti-correlated: fat, fluid and vessels swap brightness); the descriptors correlate positively."""
    from phantoms import generate_case
    ct, lab = generate_case(2000, "ct", motion=False, inplane_range=(3.0, 3.5), slice_range=(6, 7))
    grid = {"spacing": ct.GetSpacing(), "size": ct.GetSize(), "origin": ct.GetOrigin(),
            "direction": ct.GetDirection(), "motion": False}
    mr, _ = generate_case(2000, mri, **grid)
    a = sitk.GetArrayFromImage(ct).astype(np.float32)
    b = sitk.GetArrayFromImage(mr).astype(np.float32)
    body = (a > -500) | (sitk.GetArrayFromImage(lab) > 0)
    intensity_corr = _corr(a[body], b[body])
    da, db = mind_ssc(torch.from_numpy(a)).numpy(), mind_ssc(torch.from_numpy(b)).numpy()
    mind_corr = float(np.mean([_corr(da[k][body], db[k][body]) for k in range(12)]))
    print(f"phantom CT vs {mri}: intensity correlation {intensity_corr:.3f}, MIND {mind_corr:.3f}")
    assert intensity_corr < 0.3
    assert mind_corr > 0.55
    assert mind_corr > intensity_corr + 0.4
