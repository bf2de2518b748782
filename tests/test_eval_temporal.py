"""``annotator eval multiview --consecutive``: the pieces with known answers (reference people
linked over frames, acceleration of a known motion, identity switches), and a CI-sized run with the
real model on Pose2Sim's 4-camera demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.eval import multiview, temporal

from .conftest import SAMPLES

SINGLE = SAMPLES / "pose2sim" / "Demo_SinglePerson"
NAMES = ["left_hip", "right_hip"] + [f"j{i}" for i in range(6)]


def _ref(frame: int, person: int, root: np.ndarray) -> multiview.Reference:
    joints = root + np.arange(8)[:, None] * np.array([0.0, 100.0, 0.0])
    return multiview.Reference(frame, person, joints, np.ones(8, bool), 4, {})


def test_reference_people_are_linked_over_frames_by_their_root():
    refs = []
    for f in range(5):  # listed in another order on every frame
        a, b = _ref(f, f % 2, np.array([30.0 * f, 0, 0])), _ref(f, 1 - f % 2, np.array([2000.0 - 30 * f, 0, 0]))
        refs += [a, b]
    ident = temporal.link_references(refs, NAMES)
    assert {ident[(f, f % 2)] for f in range(5)} == {0} and {ident[(f, 1 - f % 2)] for f in range(5)} == {1}


def test_acceleration_error_and_identity_switches_of_a_known_motion():
    refs = [_ref(f, 0, np.array([0.0, 0, 10.0 * f * f])) for f in range(6)]  # 20 mm/frame^2 along z
    ident = {(f, 0): 0 for f in range(6)}
    match = {(f, 0, 0): 0 for f in range(6)}
    still = {f: [{"poses3d": refs[0].joints[None]}] for f in range(6)}  # the prediction does not move
    acc = temporal.acceleration(still, refs, match, ident, 1)
    assert acc["accel_error_mm_per_frame2"] == pytest.approx(20.0) and acc["accel_triples"] == 4
    exact = {f: [{"poses3d": refs[f].joints[None]}] for f in range(6)}
    assert temporal.acceleration(exact, refs, match, ident, 1)["accel_error_mm_per_frame2"] == 0.0
    views = [multiview.View("cam01", None, None)]
    ids = {(f, "cam01"): np.array([7 if f < 3 else 9]) for f in range(6)}
    got = temporal.identity(ids, refs, match, ident, views)
    assert got["identity_switches"] == 1 and got["tracks_per_person_and_view"] == [2]


@pytest.mark.slow
def test_consecutive_frames_with_the_real_model(estimator, tmp_path):
    # 8 frames (32 images): enough acceleration triples for RTS to show the halving docs/models.md
    # reports on 60 frames (4 frames measured only 42.2 -> 32.3 mm/frame^2: too few triples)
    report = temporal.run(SINGLE, tmp_path, multiview.Settings(),
                          temporal.TemporalSettings(consecutive=8, start=30), model=estimator)
    assert report["frames"] == 8 and report["first_frame"] == 30 and report["fps"] == 60.0
    per_frame, smoothed = report["rows"]["per frame"], report["rows"]["temporal (rts)"]
    for row in (per_frame, smoothed):
        assert row["people_matched"] >= 30  # measured 32 of 32 (the one person in every view); 2 may be lost
        assert row["accel_triples"] == 24  # 6 consecutive triples x 4 views, exactly
        assert row["tracks_per_view"] == {"cam01": 1, "cam02": 1, "cam03": 1, "cam04": 1}
        assert row["identity_switches"] == 0
    # per frame: measured 62.4 mm/frame^2 (the reference's own acceleration: 14.1); 43.9 before the
    # body-size prior, whose per-frame size from the limbs jitters the depth (a video track gets one
    # size in the temporal step); bound +-25 %
    assert 47.0 <= per_frame["accel_error_mm_per_frame2"] <= 78.0, per_frame
    # RTS at least halves it: measured 19.9 / 62.4 = 0.32 (22.1 / 43.9 before the prior; docs/models.md,
    # 60 frames: 29.9 / 68.5 = 0.44); bound 0.6
    ratio = smoothed["accel_error_mm_per_frame2"] / per_frame["accel_error_mm_per_frame2"]
    assert ratio <= 0.6, (ratio, smoothed, per_frame)
    # and does not bend the poses to do it: root-relative MPJPE measured 141.4 vs 140.7 per frame (+0.7 mm;
    # on 60 frames it is lower, 116.8 vs 121.2); bound: at most 5 mm worse
    assert smoothed["root_relative_mpjpe_mm"] <= per_frame["root_relative_mpjpe_mm"] + 5.0, (smoothed, per_frame)
    assert json.loads((tmp_path / "temporal.json").read_text())["rows"].keys() == report["rows"].keys()
    assert "| temporal (rts) |" in (tmp_path / "temporal.md").read_text()
