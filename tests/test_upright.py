"""The world-up preflight (``pipeline.upright``) on real plans: a folder whose ``camera.json`` holds a
Z-up lab's extrinsics, planned and checked before any work, with the default up and with the right
one (known answers from a synthetic camera)."""

from __future__ import annotations

import json
import logging

import numpy as np

from annotator.pipeline import plan, upright
from tests.helpers.photos import write_photos
from tests.test_ground_plane import _camera

K = [[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]]


def _folder(tmp_path, ext: np.ndarray, n: int = 5):
    src = tmp_path / "in"
    write_photos(src, n)
    (src / "camera.json").write_text(json.dumps({"intrinsics": K, "extrinsics": ext.tolist()}))
    return plan.create(plan.PlanOptions(str(src), shard_size=2), str(tmp_path / "_plan"))


def test_a_z_up_lab_planned_with_the_default_up_is_warned_before_any_work(tmp_path, caplog):
    ext = _camera()  # a mocap lab's camera: Z up, looking slightly down
    p = _folder(tmp_path, ext)
    cams = upright.plan_extrinsics(p)
    assert len(cams) == 5 and all(np.allclose(c, ext, atol=1e-3) for c in cams)
    with caplog.at_level(logging.WARNING, logger="annotator.pipeline.upright"):
        line = upright.check_world_up(p, (0.0, -1.0, 0.0))
    assert line.startswith("in 5 of 5 cameras of the plan with extrinsics the world's up (0,-1,0)")
    assert line.endswith("--world-up 0,0,1") and line in caplog.text
    # the right up: nothing to say
    assert upright.check_world_up(p, (0.0, 0.0, 1.0)) is None
    assert upright.advice(cams, (0.0, 0.0, 1.0)) == {}


def test_plans_without_extrinsics_say_nothing(tmp_path):
    src = tmp_path / "in"
    write_photos(src, 3)
    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "_plan"))
    assert upright.plan_extrinsics(p) == [] and upright.check_world_up(p, (0.0, -1.0, 0.0)) is None
