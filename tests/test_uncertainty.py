"""The labels' sigmas (``labels.uncertainty``) and their checks (``eval.uncertainty``, ``eval.metrics``):
known answers on synthetic errors."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.eval import metrics
from annotator.eval import uncertainty as check
from annotator.labels import uncertainty


def test_joint_kinds_by_name():
    kinds = {n: uncertainty.joint_kind(n) for n in
             ("left_hip", "pelv", "neck", "nose", "rear", "lelb", "right_knee", "lwri", "right_ankle", "left_heel")}
    assert kinds == {"left_hip": "trunk", "pelv": "trunk", "neck": "trunk", "nose": "head", "rear": "head",
                     "lelb": "middle", "right_knee": "middle", "lwri": "end", "right_ankle": "end", "left_heel": "end"}


def test_joint_sigma_grows_as_quality_falls_and_with_spread_and_size_doubt():
    names = ["pelv", "lwri"]
    rel = np.array([[[0.0, 0, 0], [0, 500, 0]]] * 2)
    cal = uncertainty.Calibration(joint_base_mm=(30.0, 40.0, 50.0, 80.0), quality_power=1.0, spread_weight=0.5,
                                  size_scale=2.0, size_scale_floor=1.0)
    s = uncertainty.joint_sigma(rel, names, np.array([1.0, 0.5]), np.array([0.0, 0.0]), calibration=cal)
    np.testing.assert_allclose(s, [[30.0, 80.0], [60.0, 160.0]])
    s2 = uncertainty.joint_sigma(rel, names, np.array([1.0, 1.0]), np.array([0.05, 0.05]),
                                 spread=np.array([[80.0, 0.0], [0.0, 0.0]]), grounded=np.array([False, True]),
                                 calibration=cal)
    # size term: |offset| x size sigma x (2 without the floor, 1 with it); spread x 0.5
    np.testing.assert_allclose(s2, [[50.0, np.hypot(80.0, 50.0)], [30.0, np.hypot(80.0, 25.0)]])
    cal = uncertainty.Calibration(size_scale=2.0, size_scale_floor=0.5, depth_base_mm=40.0)
    d = uncertainty.depth_sigma(np.array([4000.0, 4000.0]), np.array([0.05, 0.05]), np.array([30.0, 30.0]),
                                np.array([False, True]), cal)
    assert d.tolist() == pytest.approx([np.sqrt(400.0 ** 2 + 30.0 ** 2 + 40.0 ** 2),
                                        np.sqrt(100.0 ** 2 + 30.0 ** 2 + 40.0 ** 2)])


def test_augmentation_spread_is_the_rms_distance_from_the_mean():
    per_aug = np.zeros((1, 2, 3, 3))
    per_aug[0, 1, 0] = [6.0, 0, 0]  # one joint of one augmentation moved 6 mm along x
    spread = uncertainty.augmentation_spread(per_aug)
    rel = per_aug - per_aug.mean(axis=2, keepdims=True)
    dist = np.linalg.norm(rel - rel.mean(axis=1, keepdims=True), axis=-1)  # [1, A, J]
    np.testing.assert_allclose(spread, np.sqrt((dist ** 2).mean(axis=1)))
    assert spread[0, 0] > spread[0, 1] > 0
    np.testing.assert_allclose(uncertainty.augmentation_spread(per_aug[:, :1]), 0.0)


def test_gaussian_errors_with_their_true_sigma_are_covered_68_and_95_percent():
    rng = np.random.default_rng(0)
    sig = rng.uniform(20, 120, size=20000)
    err = rng.normal(0, sig)
    assert check.coverage(err, sig, 1) == pytest.approx(0.683, abs=0.01)
    assert check.coverage(err, sig, 2) == pytest.approx(0.954, abs=0.005)
    # sigmas half as large as the truth: the fit finds the factor 2
    assert check.fit_scale(err, sig / 2) == pytest.approx(2.0, rel=0.03)
    fitted = check.cross_check({"a": (err[:10000], sig[:10000] / 2), "b": (err[10000:], sig[10000:] / 2)})
    assert fitted["a"]["checked"]["b"]["within_1_sigma"] == pytest.approx(0.683, abs=0.02)
    assert fitted["b"]["checked"]["a"]["within_2_sigma"] == pytest.approx(0.954, abs=0.01)


def test_reliability_curve_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    joint_sig = np.full(6000, 50.0)
    joint_err = np.abs(rng.normal(0, 50.0, size=6000))  # distances shaped like a 1D error
    depth_sig = np.full(400, 100.0)
    depth_err = rng.normal(0, 100.0, size=400)
    curve = metrics.reliability(depth_err, depth_sig, joint_err, joint_sig)
    k1, k2 = curve["k"].index(1.0), curve["k"].index(2.0)
    assert curve["joints"][k1] == pytest.approx(0.683, abs=0.02)
    assert curve["joints"][k2] == pytest.approx(0.954, abs=0.01)
    assert curve["joints_n"] == 6000 and curve["depth_n"] == 400
    assert curve["depth"][k1] == pytest.approx(0.683, abs=0.06)
    assert curve["gaussian_1d"][k1] == pytest.approx(0.683, abs=1e-3)
    png = check.plot_reliability(curve, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
