"""Person detection recall of the exported default model on real photos.

bus.jpg (Ultralytics, AGPL: never committed) is taken from the ultralytics wheel at test time. Its
four people were boxed by eye (x0, y0, x1, y1); two are cut off by the image border. MoveNet alone
at 256 px finds 2 of them; the multi-view detector (docs/models.md) must find at least 3, with no
false positive, and still exactly one person on each single-person sample photo.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import load_rgb

pytestmark = pytest.mark.slow  # loads the default model

BUS_PEOPLE = [(671, 395, 809, 878), (47, 400, 239, 904), (223, 408, 344, 860), (0, 550, 62, 873)]
SINGLE_PERSON = ["astronaut.png", "camera.png", "pose2sim_cam01_f030.jpg", "pose2sim_cam02_f030.jpg",
                 "pose2sim_cam03_f030.jpg", "pose2sim_cam04_f030.jpg"]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _corners(boxes):
    return [(x, y, x + w, y + h) for x, y, w, h in np.asarray(boxes)[:, :4]]


@pytest.fixture(scope="module")
def bus_jpg(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("ultralytics")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "ultralytics==8.4.190", "-d",
                           str(cache), "-q"], capture_output=True, text=True, timeout=600)
    wheels = list(cache.glob("ultralytics-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"ultralytics wheel not available: {proc.stderr[-300:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        target = cache / "bus.jpg"
        target.write_bytes(z.read("ultralytics/assets/bus.jpg"))
    return target


@pytest.mark.parametrize("name", SINGLE_PERSON)
def test_one_person_per_single_person_photo(estimator, samples_dir, name):
    out = estimator.detect_poses(load_rgb(samples_dir / name), num_aug=1)
    assert out["boxes"].shape[0] == 1


def test_bus_recall(estimator, bus_jpg):
    out = estimator.detect_poses(load_rgb(bus_jpg), num_aug=1)
    found = _corners(out["boxes"].numpy())
    hits = [max((iou(g, f) for f in found), default=0.0) >= 0.5 for g in BUS_PEOPLE]
    assert sum(hits) >= 3, (hits, found)
    assert hits[:3] == [True, True, True], "the three people with a visible body are found"
    false_positives = [f for f in found if max(iou(g, f) for g in BUS_PEOPLE) < 0.5]
    assert not false_positives, false_positives


def test_detector_keypoints_are_each_persons_own_and_mirrored_back(estimator, bus_jpg):
    """MoveNet's 17 keypoints come out per person (the quality score's second 2D opinion): inside
    that person's box, the same with and without the mirrored detector pass (left/right exchanged
    back), and in agreement with the crop model's own 2D."""
    image = load_rgb(bus_jpg)
    names = [n.decode() for n in estimator.detector_keypoint_names.numpy()]
    assert len(names) == 17 and names[5:7] == ["left_shoulder", "right_shoulder"]
    per_flip = {}
    for flip in (False, True):
        out = estimator.detect_poses(image, num_aug=1, detector_flip_aug=flip)
        kp, boxes = out["detector_keypoints"].numpy(), out["boxes"].numpy()
        assert kp.shape == (len(boxes), 17, 3)
        order = np.argsort(boxes[:, 0])
        per_flip[flip] = kp[order], boxes[order]
        for (x, y, w, h, _), person in zip(boxes, kp, strict=True):
            sure = person[person[:, 2] > 0.3]
            inside = (sure[:, 0] > x - 0.1 * w) & (sure[:, 0] < x + 1.1 * w) & (sure[:, 1] > y - 0.1 * h) \
                & (sure[:, 1] < y + 1.1 * h)
            assert len(sure) >= 5 and inside.mean() > 0.9
    (kp0, boxes0), (kp1, _) = per_flip[False], per_flip[True]
    for a, b, box in zip(kp0, kp1, boxes0, strict=False):
        sure = (a[:, 2] > 0.3) & (b[:, 2] > 0.3)
        # the same person's same joints (a left/right mix-up would move shoulders by ~their width)
        assert np.median(np.linalg.norm(a[sure, :2] - b[sure, :2], axis=-1)) < 0.05 * box[3]
    out = estimator.detect_poses(image, num_aug=1)
    joints = [n.decode() for n in estimator.joint_names.numpy()]
    same = [joints.index(n) for n in names]  # the crop model's joints of the same names
    kp, raw, box_h = out["detector_keypoints"].numpy(), out["poses2d_raw"].numpy(), out["boxes"].numpy()[:, 3]
    agree = np.median(np.linalg.norm(kp[..., :2] - raw[:, same], axis=-1), axis=1) / box_h
    assert np.sum(agree < 0.05) >= 2, agree  # the two people seen whole: the two networks agree


def test_given_boxes_have_no_detector_keypoints(estimator, samples_dir):
    image = load_rgb(samples_dir / "astronaut.png")
    out = estimator.estimate_poses(image, np.array([[100, 50, 250, 400]], np.float32), num_aug=1)
    assert "detector_keypoints" not in out and out["poses3d"].shape[0] == 1
