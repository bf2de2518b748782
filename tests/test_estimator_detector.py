"""Person detection recall of the exported default model on real photos.

The multi-person photos are frame 0 of the four committed views of Pose2Sim's Demo_MultiPerson
(BSD-3-Clause, samples/LICENSES.md), decoded from the clips here: nothing is downloaded. Each view
holds a man and a woman seen whole, and the two views facing the room's back wall a bystander too
(cam01: cut off by the left border; cam02: small, ~400 px tall, behind the others); cam02 also
shows an anatomical mannequin and cam04 a poster of a body, which must not be taken for people.
Everyone was boxed by eye (x0, y0, x1, y1, full-resolution pixels of the 1088 x 1920 frames).
The detector must find every person seen whole, with no false positive, and still exactly one
person on each single-person sample photo.
"""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import SAMPLES, load_rgb

pytestmark = pytest.mark.slow  # loads the default model

LAB = SAMPLES / "pose2sim" / "Demo_MultiPerson" / "videos"
# per view: the people seen whole first (the man, then the woman), then the bystander if any
LAB_PEOPLE = {
    "cam01": [(244, 320, 564, 1160), (482, 790, 960, 1738), (0, 287, 132, 763)],
    "cam02": [(408, 395, 742, 1117), (42, 634, 358, 1474), (758, 482, 845, 885)],
    "cam03": [(482, 406, 800, 1316), (172, 500, 370, 1033)],
    "cam04": [(160, 478, 662, 1415), (649, 401, 952, 935)],
}
WHOLE = 2  # the first two of each view
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
def lab_frames() -> dict[str, np.ndarray]:
    """Frame 0 of each view, RGB, decoded from the committed clips."""
    import av

    frames = {}
    for view in LAB_PEOPLE:
        with av.open(str(LAB / f"{view}.mp4")) as container:
            frames[view] = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return frames


def test_the_lab_frames_are_the_boxed_ones(lab_frames):
    for view, frame in lab_frames.items():
        assert frame.shape == (1920, 1088, 3), view


def _match(truth, found) -> tuple[list[bool], list]:
    """Which people drawn by eye were found (IoU >= 0.5), and the found boxes that match nobody."""
    hits = [max((iou(g, f) for f in found), default=0.0) >= 0.5 for g in truth]
    false_positives = [f for f in found if max(iou(g, f) for g in truth) < 0.5]
    return hits, false_positives


@pytest.mark.parametrize("name", SINGLE_PERSON)
def test_one_person_per_single_person_photo(estimator, samples_dir, name):
    out = estimator.detect_poses(load_rgb(samples_dir / name), num_aug=1)
    assert out["boxes"].shape[0] == 1


def test_multi_person_recall(estimator, lab_frames):
    hits = {}
    for view, truth in LAB_PEOPLE.items():
        found = _corners(estimator.detect_poses(lab_frames[view], num_aug=1)["boxes"].numpy())
        hits[view], false_positives = _match(truth, found)
        assert hits[view][:WHOLE] == [True] * WHOLE, (view, hits[view], found)
        assert not false_positives, (view, false_positives)
    # measured: 8 of 10, the 8 seen whole (IoU 0.88-0.96); neither bystander at the default settings
    # (the mirrored pass finds cam01's at the border, at score 0.375 against the threshold 0.3)
    assert sum(map(sum, hits.values())) >= 8, hits


@pytest.mark.parametrize("view", ["cam02", "cam03", "cam04"])
def test_detector_keypoints_are_each_persons_own_and_mirrored_back(estimator, lab_frames, view):
    """MoveNet's 17 keypoints come out per person (the quality score's second 2D opinion): inside
    that person's box, the same with and without the mirrored detector pass (left/right exchanged
    back), and in agreement with the crop model's own 2D. (cam01 is left out: the mirrored pass
    finds its border bystander too, so the two passes hold different people.)"""
    image = lab_frames[view]
    names = [n.decode() for n in estimator.detector_keypoint_names.numpy()]
    assert len(names) == 17 and names[5:7] == ["left_shoulder", "right_shoulder"]
    per_flip = {}
    for flip in (False, True):
        out = estimator.detect_poses(image, num_aug=1, detector_flip_aug=flip)
        kp, boxes = out["detector_keypoints"].numpy(), out["boxes"].numpy()
        assert kp.shape == (len(boxes), 17, 3)
        per_flip[flip] = out, kp, boxes
        for (x, y, w, h, _), person in zip(boxes, kp, strict=True):
            sure = person[person[:, 2] > 0.3]
            inside = (sure[:, 0] > x - 0.1 * w) & (sure[:, 0] < x + 1.1 * w) & (sure[:, 1] > y - 0.1 * h) \
                & (sure[:, 1] < y + 1.1 * h)
            assert len(sure) >= 5 and inside.mean() > 0.9
    (out, kp0, boxes0), (_, kp1, boxes1) = per_flip[False], per_flip[True]
    assert len(boxes0) == len(boxes1) == WHOLE, (len(boxes0), len(boxes1))
    # the same people in both passes, paired by their boxes
    pair = [int(np.argmax([iou(a, b) for b in _corners(boxes1)])) for a in _corners(boxes0)]
    assert sorted(pair) == list(range(len(boxes1))), pair
    moved = []
    for a, b, box in zip(kp0, kp1[pair], boxes0, strict=True):
        sure = (a[:, 2] > 0.3) & (b[:, 2] > 0.3)
        moved.append(np.median(np.linalg.norm(a[sure, :2] - b[sure, :2], axis=-1)) / box[3])
    # the same person's same joints: measured 0.006-0.012 of the box height (a left/right mix-up
    # would move the paired joints by about a shoulder's width, ~0.1); NMS keeps the mirrored
    # pass's candidate for one of the two people in each view (the other moves by 0), and the
    # check needs that one
    assert max(moved) < 0.03 and max(moved) > 0, moved
    joints = [n.decode() for n in estimator.joint_names.numpy()]
    same = [joints.index(n) for n in names]  # the crop model's joints of the same names
    raw, box_h = out["poses2d_raw"].numpy(), boxes0[:, 3]
    agree = np.median(np.linalg.norm(kp0[..., :2] - raw[:, same], axis=-1), axis=1) / box_h
    # both people are seen whole: the two networks agree (measured 0.014-0.027 of the box height)
    assert (agree < 0.04).all(), agree


def test_given_boxes_have_no_detector_keypoints(estimator, samples_dir):
    image = load_rgb(samples_dir / "astronaut.png")
    out = estimator.estimate_poses(image, np.array([[100, 50, 250, 400]], np.float32), num_aug=1)
    assert "detector_keypoints" not in out and out["poses3d"].shape[0] == 1
