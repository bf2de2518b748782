"""A rig as job input (annotator.pipeline.rig): the check that refuses a calibration that does not
fit before any work, its time windows, and one shard's fusion step with known answers (synthetic
people seen through synthetic cameras with lens distortion)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from annotator.eval import calibration
from annotator.labels import fusion
from annotator.labels import multiview_geometry as geo
from annotator.pipeline import rig
from annotator.temporal import consistency, tracking

from .test_eval_multiview import SINGLE, _cameras
from .test_fusion import NAMES, SKEL, body


def _frame_folders(root, n_views=3, frames=4, size=(64, 48)):
    for v in range(n_views):
        d = root / "videos" / f"cam{v + 1:02d}"
        d.mkdir(parents=True)
        for i in range(frames):
            Image.new("RGB", size, (10 * v, 20 * i, 0)).save(d / f"{i:04d}.png")
    return root


def _sized(cams, size):
    return [dataclasses.replace(c, size=size) for c in cams]


def test_check_accepts_a_fitting_rig_and_refuses_misfits_before_any_work(tmp_path):
    root = _frame_folders(tmp_path / "rig")
    cams = _sized(_cameras(3), (64, 48))
    r = rig.check(root, cams, rig.RigSpec(offsets={"cam02": 1}))
    assert [v.name for v in r.views] == ["cam01", "cam02", "cam03"] and r.frames == 3
    assert r.views[1].offset == 1 and r.views[0].size == (64, 48)
    with pytest.raises(rig.RigError, match=r"3 views .* but 2 calibrated cameras"):
        rig.check(root, [dataclasses.replace(c, name=f"x{i}") for i, c in enumerate(cams[:2])])
    with pytest.raises(rig.RigError, match=r"cam02: its frames are 64x48 but camera cam02 is calibrated for 1920x1080"):
        rig.check(root, [cams[0], _sized([cams[1]], (1920, 1080))[0], cams[2]])
    with pytest.raises(rig.RigError, match="rotated by 90 degrees"):
        rig.check(root, _sized(cams, (48, 64)))
    with pytest.raises(rig.RigError, match="unknown camera"):
        rig.check(root, cams, rig.RigSpec(offsets={"cam09": 2}))
    with pytest.raises(rig.RigError, match="outside its 4 frames"):
        rig.check(root, cams, rig.RigSpec(offsets={"cam01": 4}))


def test_pose2sim_rig_fits_its_calibration_with_codec_padding():
    # Demo_SinglePerson's videos decode at 1080x1920; its Qualisys calibration says 1088x1920 (16-pixel macroblocks)
    r = rig.check(SINGLE, calibration.load(SINGLE / "calibration"))
    assert len(r.views) == 4 and r.frames == 100 and r.views[0].size == (1080, 1920)
    assert r.views[0].camera.size == (1088, 1920) and r.fps == 60.0


def test_windows_cover_every_frame_once_with_context():
    ws = rig.windows(25, 10, 3)
    assert [(w.start, w.stop, w.read_start, w.read_stop) for w in ws] == [(0, 10, 0, 13), (10, 20, 7, 23),
                                                                          (20, 25, 17, 25)]


def test_undistortion_inverts_the_lens_model():
    for cam in _cameras(3):
        rays = np.random.default_rng(0).uniform(-0.5, 0.5, (40, 2))
        pixels = consistency.project(np.concatenate([rays, np.ones((40, 1))], 1), cam.intrinsics, cam.distortion)
        np.testing.assert_allclose(geo.undistort_pixels(pixels, cam.intrinsics, cam.distortion), rays, atol=1e-7)


def test_fuse_window_one_world_row_per_person_and_frame_reprojected_into_every_view(tmp_path):
    root = _frame_folders(tmp_path / "rig", n_views=3, frames=12)
    cams = _sized(_cameras(3), (64, 48))
    r = rig.check(root, cams)
    truth = {f: [body((-500 + 15 * f, 0, 0)), body((600, 300 - 10 * f, 0), 160)] for f in range(12)}
    preds = {}
    for f, people in truth.items():
        preds[f] = []
        for cam in cams:
            cam_xyz = [geo.to_camera(p, cam) for p in people]
            pixels = np.stack([consistency.project(x, cam.intrinsics, cam.distortion) for x in cam_xyz])
            preds[f].append({"pixels": pixels[::-1] if f % 2 else pixels, "conf": np.full((2, len(NAMES)), 0.9),
                             "poses3d": np.stack(people)[::-1] if f % 2 else np.stack(people)})
    w = rig.Window(shard=2, start=4, stop=8, read_start=0, read_stop=12)
    rows = rig.fuse_window(w, preds, r, SKEL, fusion.FusionConfig(), rig.RigSpec(fps=60))
    assert sorted({row["frame"] for row in rows}) == [4, 5, 6, 7] and len(rows) == 8
    by_track: dict[int, list] = {}
    for row in rows:
        by_track.setdefault(row["track_id"], []).append(row)
    assert len(by_track) == 2 and all(t // tracking.ID_STRIDE == 2 for t in by_track)
    for row in rows:
        person = min(truth[row["frame"]], key=lambda p: np.linalg.norm(p.mean(0) - row["joints_world_mm"].mean(0)))
        np.testing.assert_allclose(row["joints_world_mm"], person, atol=2.0)
        assert (row["views_used"] == 3).all() and row["quality"] > 0.5
        for v, cam in zip(r.views, cams, strict=True):
            want = consistency.project(geo.to_camera(person, cam), cam.intrinsics, cam.distortion)
            np.testing.assert_allclose(row["views"][v.name]["poses2d"], want, atol=0.5)
            np.testing.assert_allclose(row["views"][v.name]["poses3d_camera"], geo.to_camera(person, cam), atol=2.0)


@pytest.mark.slow
def test_label_window_on_a_real_rig(estimator):
    from annotator.pipeline.infer import InferenceSettings, PoseInference

    r = rig.check(SINGLE, calibration.load(SINGLE / "calibration"))
    up = calibration.world_up(SINGLE / "calibration")
    stage = PoseInference(estimator, InferenceSettings(skeleton="coco_19", world_up_vector=up, ground_plane=True))
    skeleton = fusion.RigSkeleton.of(stage.skeleton["joint_names"], stage.skeleton["edges"])
    window = rig.Window(shard=0, start=1, stop=3, read_start=0, read_stop=4)  # frames 1-2, one frame of context
    rows, seconds = rig.label_window(lambda k, images: stage(images), r, window, skeleton, spec=rig.RigSpec(fps=60))
    assert [row["frame"] for row in rows] == [1, 2] and len({row["track_id"] for row in rows}) == 1
    for row in rows:
        assert (row["views_used"] >= 2).mean() > 0.8 and np.nanmedian(row["reprojection_px"]) < 30
        assert 1400 < np.ptp(row["joints_world_mm"][:, 2]) < 2000  # a standing adult, z up (Qualisys)
        for v in r.views:
            assert row["views"][v.name]["poses2d"].shape == (len(NAMES), 2)
    assert seconds["fusion"] < seconds["inference"]


def test_run_refuses_a_rig_whose_calibration_does_not_fit_before_any_work(tmp_path, capsys):
    from annotator.cli import main

    root = _frame_folders(tmp_path / "rig")  # 3 views of 64x48; the Pose2Sim calibration: 4 cameras of 1088x1920
    out = tmp_path / "out"
    code = main(["run", str(root), str(out), "--rig", "--rig-calibration", str(SINGLE / "calibration")])
    assert code == 2 and not out.exists()
    assert "cam01: its frames are 64x48 but camera cam01 is calibrated for 1088x1920" in capsys.readouterr().err
    (tmp_path / "job.toml").write_text(f'input = "{root}"\noutput = "{out}"\n[rig]\noffsets = {{cam07 = 2}}\n')
    calib = root / "calibration"
    calib.mkdir()
    (calib / "calib.json").write_text(json.dumps({c.name: {
        "K": c.intrinsics.tolist(), "dist": c.distortion.tolist(), "R": c.rotation.tolist(),
        "t": c.translation.tolist(), "units": "mm", "size": [64, 48]} for c in _cameras(3)}))
    assert main(["run", "--spec", str(tmp_path / "job.toml")]) == 2 and not out.exists()
    assert "frame offsets for unknown camera(s) cam07" in capsys.readouterr().err
