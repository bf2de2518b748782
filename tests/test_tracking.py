"""Tracking with known answers: the assignment against brute force, people who cross (no identity
switch), a person who leaves and comes back within the miss budget (same track) or after it (a new
one), and the windowed state (a sequence cut anywhere continues with the same ids)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from annotator.temporal import tracking
from tests.helpers import people


def test_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5), (2, 7)]:
        for _ in range(20):
            cost = rng.uniform(0, 10, (n, m))
            pairs = tracking.linear_assignment(cost)
            assert len(pairs) == min(n, m)
            assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})
            got = sum(cost[r, c] for r, c in pairs)
            if n <= m:
                best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
            else:
                best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
            assert got == pytest.approx(best)


def _frame(t: int, centres: list[np.ndarray | None], rng, order: list[int] | None = None) -> tracking.Frame:
    """Detections of the people at ``centres`` (None: not detected), listed in ``order``."""
    boxes, j2, j3 = [], [], []
    for i in order or range(len(centres)):
        c = centres[i]
        if c is None:
            continue
        x = people.pose_at(c, 0.3 * t) + rng.normal(0, 15, (len(people.NAMES), 3))
        p2 = people.project(x)
        boxes.append(people.box_of(p2))
        j2.append(p2)
        j3.append(x)
    k = len(boxes)
    return tracking.Frame(t, t, np.array(boxes).reshape(k, 5), np.array(j2).reshape(k, len(people.NAMES), 2),
                          np.array(j3).reshape(k, len(people.NAMES), 3))


def _run(frames):
    return tracking.track(frames, tracking.TrackerConfig(), people.NAMES)


def test_people_who_cross_keep_their_ids():
    """Two people walk towards each other at different depths, cross in the image (the one behind
    hidden for 3 frames at the crossing), and walk on; detections come in shuffled order."""
    rng = np.random.default_rng(1)
    frames, truth = [], []
    for t in range(60):
        a = np.array([-1500.0 + 50 * t, 0, 4000])  # walks right
        b = np.array([1600.0 - 50 * t, 100, 5200])  # walks left, further away
        hidden = 30 <= t < 33
        order = [1, 0] if t % 2 else [0, 1]
        frames.append(_frame(t, [a, None if hidden else b], rng, order))
        truth.append([p for p in order if not (hidden and p == 1)])
    ids = _run(frames)
    track_of = {0: set(), 1: set()}
    for got, who in zip(ids, truth, strict=True):
        for tid, p in zip(got, who, strict=True):
            track_of[p].add(int(tid))
    assert len(track_of[0]) == 1 and len(track_of[1]) == 1
    assert track_of[0] != track_of[1]
    assert ids[0].min() >= 0 and sorted(ids[0].tolist()) == [0, 1]  # born at frame 0: ids 0*1000 + rank


def test_a_person_who_leaves_and_comes_back_within_the_miss_budget_keeps_the_track():
    rng = np.random.default_rng(2)
    cfg = tracking.TrackerConfig()
    gone = range(20, 20 + cfg.max_misses)  # out of the picture for max_misses frames
    frames = [_frame(t, [None if t in gone else np.array([10.0 * t, 0, 4000])], rng) for t in range(70)]
    ids = _run(frames)
    seen = {int(i[0]) for i in ids if len(i)}
    assert seen == {0}


def test_a_person_gone_longer_than_the_miss_budget_gets_a_new_track():
    rng = np.random.default_rng(3)
    cfg = tracking.TrackerConfig()
    back = 20 + cfg.max_misses + 2
    frames = [_frame(t, [np.array([10.0 * t, 0, 4000]) if t < 20 or t >= back else None], rng)
              for t in range(back + 10)]
    ids = _run(frames)
    assert {int(i[0]) for i in ids[:20]} == {0}
    assert {int(i[0]) for i in ids[back:]} == {back * tracking.ID_STRIDE}


def test_low_score_detections_continue_tracks_but_never_start_them():
    rng = np.random.default_rng(4)
    frames = []
    for t in range(10):
        f = _frame(t, [np.array([20.0 * t, 0, 4000]), np.array([-1500.0, 0, 6000])], rng)
        f.boxes[0, 4] = 0.9 if t < 3 else 0.35  # person 0 becomes unsure; person 1 is always unsure
        f.boxes[1, 4] = 0.35
        frames.append(f)
    ids = _run(frames)
    assert all(int(i[0]) == 0 for i in ids)
    assert all(int(i[1]) == -1 for i in ids)


def test_a_cut_sequence_continues_with_the_same_ids():
    """The state at frame t is a function of the last ``window`` labelled frames: tracking frames
    40.. after the labelled frames 40-window..39 gives what tracking 0.. in one go gives."""
    rng = np.random.default_rng(5)
    frames = []
    for t in range(80):
        frames.append(_frame(t, [np.array([-1500.0 + 40 * t, 0, 4000]),
                                 None if 45 <= t < 50 else np.array([1600.0 - 40 * t, 0, 5000]),
                                 np.array([0.0, 0, 3000]) if t >= 20 else None], rng))
    whole = _run(frames)
    window = tracking.TrackerConfig().window
    cut = 40
    context = [tracking.Frame(f.t, f.frame, f.boxes, f.joints2d, f.joints3d, f.conf, whole[f.t])
               for f in frames[cut - window:cut]]
    rest = _run(context + frames[cut:])[len(context):]
    for a, b in zip(whole[cut:], rest, strict=True):
        assert a.tolist() == b.tolist()
