"""``annotator eval mocap``: the metrics on synthetic poses with known errors, the dataset format and
its errors, and the command end to end with the tiny official-API model, whose output is a known
function of the image and the camera (``tests/reliability/tiny_model.py``), so every number the
command reports is known before it runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from annotator.eval import joint_names, metrics, mocap, mocap_data
from tests.reliability import tiny_model
from tests.reliability.common import tiny_model_folder

LIMB_NAMES = ["left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
              "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"]


def _person(seed=0) -> np.ndarray:
    """A plausible standing body (12 limb joints, camera frame, mm, 3.5 m away)."""
    rng = np.random.default_rng(seed)
    x = {"left_hip": (100, 0), "right_hip": (-100, 0), "left_knee": (110, 420), "right_knee": (-110, 420),
         "left_ankle": (110, 820), "right_ankle": (-110, 820), "left_shoulder": (180, -500),
         "right_shoulder": (-180, -500), "left_elbow": (220, -220), "right_elbow": (-220, -220),
         "left_wrist": (240, 20), "right_wrist": (-240, 20)}
    pose = np.array([[x[n][0], x[n][1], 3500.0] for n in LIMB_NAMES])
    return pose + rng.normal(0, 30, pose.shape)


def _hips(pose):
    return pose[:2].mean(0)


# ------------------------------------------------------------------------------ (a) metrics
def test_a_shift_is_root_error_and_depth_bias_only():
    ref = _person()
    offset = np.array([30.0, -40.0, 120.0])  # |offset| = 130
    s = metrics.person_metrics(ref + offset, ref, np.ones(12, bool), LIMB_NAMES, pelvis_first=False)
    assert s["root_error_mm"] == pytest.approx(130.0)
    assert s["root_depth_bias_mm"] == pytest.approx(120.0)  # predicted too far by 120 mm
    assert s["root_relative_mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
    assert s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert s["limb_scale"] == pytest.approx(1.0) and s["pck"] == 1.0
    assert metrics.auc(s["joint_errors"]) >= 30 / 31  # within 5 mm (the 0 mm threshold is float noise)


def test_a_scale_about_the_root_is_limb_scale():
    ref = _person(1)
    root = _hips(ref)
    for scale in (0.86, 1.0, 1.12):
        pred = root + scale * (ref - root)
        s = metrics.person_metrics(pred, ref, np.ones(12, bool), LIMB_NAMES, pelvis_first=False)
        assert s["limb_scale"] == pytest.approx(scale)
        assert s["root_error_mm"] == pytest.approx(0.0, abs=1e-9)
        assert s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)  # similarity alignment removes scale
        # every joint is off by |scale - 1| times its distance from the root
        expected = abs(scale - 1) * np.linalg.norm(ref - root, axis=-1).mean()
        assert s["root_relative_mpjpe_mm"] == pytest.approx(expected, abs=1e-9)


def test_a_rotation_is_removed_by_procrustes_only():
    ref = _person(2)
    root = _hips(ref)
    a = np.deg2rad(40)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # about the vertical
    pred = (ref - root) @ rot.T + root + [0, 0, 50]
    s = metrics.person_metrics(pred, ref, np.ones(12, bool), LIMB_NAMES, pelvis_first=False)
    assert s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert s["limb_scale"] == pytest.approx(1.0)
    assert s["root_error_mm"] == pytest.approx(50.0)
    expected = np.linalg.norm((ref - root) @ rot.T - (ref - root), axis=-1).mean()
    assert s["root_relative_mpjpe_mm"] == pytest.approx(expected) and expected > 50


def test_a_swapped_sides_and_missing_joints():
    ref = _person(3)
    from annotator.estimator import skeletons

    mirror = skeletons.mirror_indices(skeletons.Skeleton("limbs", tuple(LIMB_NAMES), ()))
    assert mirror[:2] == [1, 0]
    s = metrics.person_metrics(ref[mirror], ref, np.ones(12, bool), LIMB_NAMES, mirror=mirror, pelvis_first=False)
    assert s["swapped"] == 1.0 and s["root_relative_mpjpe_mm"] > 100
    valid = np.ones(12, bool)
    valid[[4, 11]] = False  # an ankle and a wrist not captured: scored on the other 10
    gappy = ref.copy()
    gappy[~valid] = np.nan
    s = metrics.person_metrics(ref + [0, 0, 10], gappy, valid, LIMB_NAMES, pelvis_first=False)
    assert s["joints"] == 10 and s["root_error_mm"] == pytest.approx(10)
    valid[0] = False  # no left hip: no root, no score
    assert metrics.person_metrics(ref, gappy, valid, LIMB_NAMES, pelvis_first=False) is None


def test_a_root_is_the_hip_midpoint_unless_asked_for_the_pelvis():
    names = ["pelvis", *LIMB_NAMES]
    pose = np.concatenate([[[0, -30, 3500.0]], _person(4)])
    np.testing.assert_allclose(metrics.root_of(pose, names, pelvis_first=False), _hips(pose[1:]))
    np.testing.assert_allclose(metrics.root_of(pose, names), pose[0])


def test_a_pck_auc_and_sigma_coverage_known_values():
    assert metrics.pck(np.array([10.0, 149.0, 150.0, 400.0]), 150) == 0.5
    # AUC: PCK at 0, 5, ..., 150 (31 thresholds); an error of 75 mm is within 16 of them
    assert metrics.auc(np.array([75.0])) == pytest.approx(16 / 31)
    assert metrics.auc(np.array([0.0, 200.0])) == pytest.approx(0.5)
    assert metrics.within_sigma(np.array([-50.0, 90.0, 300.0, np.nan]), np.array([100.0, 100.0, 100.0, 1.0])) \
        == pytest.approx(2 / 3, abs=1e-3)
    assert metrics.within_sigma(np.array([300.0]), np.array([np.nan])) is None
    rows = [{"quality": q, "root_relative_mpjpe_mm": e, "pa_mpjpe_mm": e / 2, "root_error_mm": 3 * e}
            for q, e in zip([0.9, 0.8, 0.5, 0.3, 0.1], [40, 50, 80, 120, 300], strict=True)]
    qe = metrics.quality_vs_error(rows)
    assert qe["spearman_root_relative_mpjpe_mm"] == -1.0 and qe["n"] == 5


# ------------------------------------------------------------------------------ joint names
def test_joint_names_mean_the_same_point():
    # the model's h36m_17 "head" is Human3.6M's neck/nose joint; 3DHP's head is the head's centre
    h36m_model = joint_names.canonical(["pelv", "rhip", "head", "htop", "neck", "lsho"], "h36m_17")
    assert h36m_model == ["pelvis", "right_hip", "neck_nose", "head_top", "thorax", "left_shoulder"]
    assert "neck_nose" in joint_names.ORDERS["h36m_17"] and "head" in joint_names.ORDERS["3dhp_17"]
    assert "neck_nose" not in joint_names.ORDERS["3dhp_17"]
    coco = joint_names.canonical(["neck", "nose", "pelv", "lsho", "lhip", "rhip"], "coco_19")
    assert joint_names.shared(list(joint_names.ORDERS["h36m_17"]), coco) == \
        ["pelvis", "right_hip", "left_hip", "thorax", "left_shoulder"]
    assert joint_names.shared(list(joint_names.ORDERS["3dhp_17"]), coco, joint_names.LIMB_JOINTS) == \
        ["left_shoulder", "right_hip", "left_hip"]
    for order in joint_names.ORDERS.values():  # every order has the 12 limb joints once
        assert len(set(order)) == len(order) and set(joint_names.LIMB_JOINTS) <= set(order)
    with pytest.raises(ValueError, match="twice"):
        joint_names.canonical(["lsho", "left_shoulder"])


def test_model_skeletons_share_the_limbs_with_every_order():
    from annotator.estimator import skeletons

    for skel in skeletons.SKELETONS.values():
        names = joint_names.canonical(skel.joint_names, skel.name)
        for order in joint_names.ORDERS.values():
            assert set(joint_names.LIMB_JOINTS) <= set(joint_names.shared(list(order), names))
    h36m = joint_names.canonical(skeletons.H36M_17.joint_names, "h36m_17")
    assert joint_names.shared(list(joint_names.ORDERS["h36m_17"]), h36m) == list(joint_names.ORDERS["h36m_17"])


# ------------------------------------------------------------------------------ the format
K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])


def _write_images(root, colours, size=(48, 64)):
    from PIL import Image

    names = []
    for i, c in enumerate(colours):
        name = f"img/{i:03d}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), c, np.uint8)).save(root / name)
        names.append(name)
    return names


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_format_round_trip(tmp_path, suffix):
    images = _write_images(tmp_path, [(10, 20, 30), (40, 50, 60)])
    joints = np.stack([_person(0), _person(1)])
    e = np.eye(4)
    e[:3, 3] = [0, 0, 500]  # world -> camera: the camera 500 mm behind the world origin
    path = mocap_data.write(tmp_path / f"mocap{suffix}", images, np.stack([K, K]), joints - [0, 0, 500],
                            names=LIMB_NAMES, frame="world", extrinsics=np.stack([e, e]),
                            distortion=np.array([[0.1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
                            sequence=["s1", "s2"], person=[0, 1], world_up=(0, -1, 0))
    data = mocap_data.load(tmp_path)  # the folder: finds mocap.parquet / mocap.npz
    assert len(data) == 2 and data.joint_names == LIMB_NAMES and data.frame == "world"
    np.testing.assert_allclose(data.joints, joints)  # world -> camera frame at load
    np.testing.assert_allclose(data.intrinsics[1], K)
    assert data.distortion[0][0] == pytest.approx(0.1) and data.groups == {"sequence": ["s1", "s2"]}
    assert data.person.tolist() == [0, 1] and data.world_up == (0.0, -1.0, 0.0)
    assert data.image_path(1) == tmp_path / "img/001.png" and path.suffix == suffix


def test_format_knows_benchmark_orders(tmp_path):
    images = _write_images(tmp_path, [(0, 0, 0)])
    order = joint_names.ORDERS["h36m_17"]
    joints = np.zeros((1, 17, 3)) + [0, 0, 4000]
    for i, n in enumerate(order):
        if n in LIMB_NAMES:
            joints[0, i] = _person()[LIMB_NAMES.index(n)]
    # the NPZ layout written by hand, as a user converting Human3.6M would: one K for all images
    np.savez(tmp_path / "mocap.npz", images=np.array(images), K=K, joints3d=joints, joint_order="h36m_17",
             action=np.array(["Walking"]))
    data = mocap_data.load(tmp_path / "mocap.npz")
    assert data.joint_names == list(order) and data.source_joint_names == list(order)
    np.testing.assert_allclose(data.intrinsics, K[None])
    assert data.groups == {"action": ["Walking"]}
    assert data.distortion[0].size == 0 and data.extrinsics == [None] and data.frame == "camera"


def _malformed(tmp_path, **change):
    """A one-row Parquet dataset with one thing wrong; returns load()'s error message."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = _write_images(tmp_path, [(0, 0, 0)])
    row = {"image": images, "K": [K.reshape(-1).tolist()], "joints3d": [_person().reshape(-1).tolist()]}
    meta = {"joint_names": LIMB_NAMES, "frame": "camera"}
    for key, value in change.items():
        if key.startswith("meta_"):
            if value is None:
                meta.pop(key[5:])
            else:
                meta[key[5:]] = value
        elif value is None:
            row.pop(key)
        else:
            row[key] = value
    pq.write_table(pa.table(row).replace_schema_metadata({mocap_data.META_KEY: json.dumps(meta)}),
                   tmp_path / "mocap.parquet")
    with pytest.raises(mocap_data.MocapFormatError) as err:
        mocap_data.load(tmp_path)
    return str(err.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"K": None}, "missing column 'K'"),
    ({"joints3d": None}, "missing column 'joints3d'"),
    ({"joints3d": [list(range(33))]}, "joints3d has 33 values, expected 36"),
    ({"K": [[60.0, 0, 0, 0, 60, 0, 32, 24, 1]]}, "K is not an intrinsic matrix"),  # column-major
    ({"K": [[0.0, 0, 32, 0, 60, 24, 0, 0, 1]]}, "K is not an intrinsic matrix"),
    ({"K": [[60.0, 0, 32, 0, 60, 24]]}, "K has 6 values"),
    ({"joints3d": [(_person() / 1000).reshape(-1).tolist()]}, "look like metres"),
    ({"joints3d": [(_person() * [1, 1, -1]).reshape(-1).tolist()]}, "behind the camera"),
    ({"meta_frame": "world"}, "frame 'world' but rows [0] have no extrinsics"),
    ({"meta_units": "m"}, "millimetres"),
    ({"meta_joint_names": None}, "no joint names"),
    ({"meta_joint_names": None, "meta_joint_order": "coco_17"}, "unknown joint order 'coco_17'"),
    ({"extrinsics": [np.diag([1.0, 1, 1, 2]).reshape(-1).tolist()]}, "extrinsics are not a 4x4 rigid"),
    ({"distortion": [[0.1, 0.2, 0.3]]}, "distortion has 3 values"),
    ({"image": ["img/missing.png"]}, "1 image(s) not found"),
    ({"image": ["img/000.png"] * 2, "K": [K.reshape(-1).tolist(), (K * [[2], [2], [1]]).reshape(-1).tolist()],
      "joints3d": [_person().reshape(-1).tolist()] * 2}, "the same image 'img/000.png' with different cameras"),
])
def test_format_errors_name_the_problem(tmp_path, change, message):
    assert message in _malformed(tmp_path, **change)


# ------------------------------------------------------------------------------ (b) end to end
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.getbasetemp() / "tiny_model_mocap")


def _tiny_pose(colour) -> np.ndarray:
    """What the tiny model answers for a uniform image of ``colour`` (its code: one person, the
    base pose scaled by 0.8 + 0.4 green and shifted 200 (blue - 0.5) mm sideways; num_aug 1)."""
    r, g, b = np.asarray(colour, np.float64) / 255
    return np.asarray(tiny_model.BASE) * (0.8 + 0.4 * g) + [200 * (b - 0.5), 0, 0]


# the tiny model's joints, named as a capture would name them, in another order
TINY_TRUTH = ["head", "thorax", "right_ankle", "pelvis", "left_ankle"]
TINY_ORDER = [2, 1, 4, 0, 3]  # tiny_model.JOINTS index of each TINY_TRUTH joint


def test_b_eval_mocap_command_knows_the_answer(tmp_path, tiny_folder, capsys):
    from annotator import cli

    colours = [(128, 128, 128), (0, 255, 255), (60, 30, 200), (200, 100, 0), (90, 90, 90), (30, 160, 60)]
    root = tmp_path / "data"
    images = _write_images(root, colours)
    poses = [_tiny_pose(c) for c in colours]  # the model's answer, camera frame (no extrinsics)
    rot = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # 90 degrees about the vertical
    truth = [
        poses[0],  # exact
        poses[1] + [0, 0, 300],  # truth 300 mm further: root error 300, depth bias -300, nothing else
        poses[2][0] + (poses[2] - poses[2][0]) / 1.25,  # truth 1.25x smaller about the root (pelvis)
        poses[3][0] + (poses[3] - poses[3][0]) @ rot.T,  # truth turned about the root
        poses[4] + [3000, 0, 0],  # 3 m to the side: the model's person is not this one
        poses[5],  # image 5 holds two captured people: the model finds one
        poses[5] + [1500, 0, 0],
    ]
    image_of = [0, 1, 2, 3, 4, 5, 5]
    joints = np.stack([t[TINY_ORDER] for t in truth])
    mocap_data.write(root / "mocap.parquet", [images[i] for i in image_of], np.stack([K] * 7), joints,
                     names=TINY_TRUTH, sequence=["s1", "s1", "s1", "s2", "s2", "s2", "s2"],
                     action=["walk", "walk", "sit", "sit", "sit", "walk", "walk"], person=[0, 0, 0, 0, 0, 0, 1])

    rc = cli.main(["eval", "mocap", str(root), "--out", str(tmp_path / "out"), "--model", tiny_folder,
                   "--batch", "4"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    summary = json.loads(printed[-1])
    assert summary == json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "| overall |" in (tmp_path / "out" / "table.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "out" / "people.csv")))
    assert [r["matched"] for r in rows] == ["True"] * 4 + ["False", "True", "False"]
    assert summary["people"] == 7 and summary["matched"] == 5
    assert summary["root"] == "pelvis" and summary["joints_compared"] == TINY_TRUTH
    got = {i: {k: float(v) for k, v in r.items() if k in mocap.MM_METRICS or k in ("pck", "auc")}
           for i, r in enumerate(rows) if r["matched"] == "True"}

    def rel(pred, true):  # root-relative joint errors, root = pelvis (the tiny model has no hips)
        return np.linalg.norm((pred - pred[0]) - (true - true[0]), axis=-1)

    expected_errors = {i: rel(poses[image_of[i]], truth[i]) for i in got}
    for i, g in got.items():
        assert g["root_relative_mpjpe_mm"] == pytest.approx(expected_errors[i].mean(), abs=0.02), i
        assert g["pa_mpjpe_mm"] == pytest.approx(0, abs=0.05), i  # every truth is a similarity of the answer
    assert got[0]["root_error_mm"] == pytest.approx(0, abs=0.02)
    assert got[1]["root_error_mm"] == pytest.approx(300, abs=0.02)
    assert got[1]["root_depth_bias_mm"] == pytest.approx(-300, abs=0.02)
    assert got[2]["root_relative_mpjpe_mm"] > 100 and got[3]["root_relative_mpjpe_mm"] > 50
    # summaries: means over matched people; PCK and AUC over all their joints
    pooled = np.concatenate(list(expected_errors.values()))
    assert summary["root_relative_mpjpe_mm"] == pytest.approx(np.mean([e.mean() for e in expected_errors.values()]),
                                                              abs=0.05)
    assert summary["root_depth_bias_mm"] == pytest.approx(-60, abs=0.05)  # (0 - 300 + 0 + 0 + 0) / 5
    assert summary["pck"] == pytest.approx((pooled < 150).mean(), abs=1e-4)
    # AUC: mean PCK at 0, 5, ..., 150 mm; at 0 mm a joint the answer puts on the truth may count or
    # not (float32 noise), which moves the AUC by at most its share / 31
    expected_auc = np.mean([(pooled <= t).mean() for t in range(0, 151, 5)])
    assert abs(summary["auc"] - expected_auc) <= (pooled < 0.01).mean() / 31 + 1e-4
    assert summary["auc"] > 0.5
    assert summary["limb_scale"] is None  # the tiny model has no limbs
    # per group: sequence s1 = images 0-2, all matched; s2 = 3 matched of 4
    assert summary["per_sequence"]["s1"]["matched"] == 3 and summary["per_sequence"]["s2"]["people"] == 4
    assert summary["per_action"]["sit"]["root_relative_mpjpe_mm"] == pytest.approx(
        np.mean([expected_errors[2].mean(), expected_errors[3].mean()]), abs=0.05)
    # the depth sigma the labels carry, against the known depth errors (0 or -300 mm)
    sig = np.array([float(r["depth_sigma_mm"]) for r in rows if r["matched"] == "True"])
    bias = np.array([0, -300, 0, 0, 0.0])
    assert np.isfinite(sig).all() and (sig > 0).all()
    assert summary["depth_within_1_sigma"] == pytest.approx((np.abs(bias) <= sig).mean(), abs=1e-3)
    assert summary["sigma_coverage"]["gaussian_1d"][1] == pytest.approx(0.683, abs=1e-3)
    assert summary["quality_vs_error"]["n"] == 5


def test_b_world_frame_and_extrinsics(tmp_path, tiny_folder):
    """Truth in the world frame, with extrinsics the model gets: predictions come back in the world
    frame and everything is compared in the camera's."""
    colours = [(100, 120, 140), (20, 200, 90), (220, 40, 180), (128, 0, 255)]
    root = tmp_path / "data"
    images = _write_images(root, colours)
    a = np.deg2rad(10)
    e = np.eye(4)
    e[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]  # about the optical axis
    e[:3, 3] = [50, -30, 100]
    poses = [_tiny_pose(c) for c in colours]
    # the tiny model ignores the extrinsics: its answer P is read as world coordinates, so the labels
    # put the person at R P + t in the camera; the truth there is P (so the 2D agree)
    truth_world = [(p - e[:3, 3]) @ e[:3, :3] for p in poses]
    mocap_data.write(root / "mocap.npz", images, np.stack([K] * 4), np.stack(truth_world)[:, TINY_ORDER],
                     names=TINY_TRUTH, frame="world", extrinsics=np.stack([e] * 4), subject=["a", "a", "b", "b"])
    summary = mocap.run(root, tmp_path / "out", mocap.Settings(model=tiny_folder))
    assert summary["matched"] == 4 and summary["frame"] == "world"
    rel = [np.linalg.norm((p - p[0]) @ e[:3, :3].T - (p - p[0]), axis=-1).mean() for p in poses]
    root_err = [np.linalg.norm(e[:3, :3] @ p[0] + e[:3, 3] - p[0]) for p in poses]
    assert summary["root_relative_mpjpe_mm"] == pytest.approx(np.mean(rel), abs=0.05)
    assert summary["root_error_mm"] == pytest.approx(np.mean(root_err), abs=0.05)
    assert summary["root_depth_bias_mm"] == pytest.approx(100, abs=0.02)  # t_z: the rotation keeps depth
    assert summary["pa_mpjpe_mm"] == pytest.approx(0, abs=0.05)
    assert set(summary["per_subject"]) == {"a", "b"}


def test_b_too_few_shared_joints_is_a_clear_error(tmp_path, tiny_folder, capsys):
    from annotator import cli

    root = tmp_path / "data"
    images = _write_images(root, [(128, 128, 128)])
    mocap_data.write(root / "mocap.parquet", images, K[None], _tiny_pose((128,) * 3)[None][:, TINY_ORDER],
                     names=TINY_TRUTH)
    rc = cli.main(["eval", "mocap", str(root), "--out", str(tmp_path / "out"), "--model", tiny_folder,
                   "--joints", "limbs"])
    assert rc == 2
    assert "share too few joints" in capsys.readouterr().err


# ------------------------------------------------------------------------------ (c) a triangulation exported
def _ring_cameras(n=3):
    """Cameras on a circle 4 m from the origin, looking at it (world z up)."""
    from annotator.eval import calibration

    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        pos = np.array([4000 * np.cos(a), 4000 * np.sin(a), 1000.0])
        z = -pos / np.linalg.norm(pos)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        rot = np.stack([x, np.cross(z, x), z])
        cams.append(calibration.Camera(f"cam{i}", np.array([[500.0, 0, 160], [0, 500, 120], [0, 0, 1]]),
                                       np.array([-0.05, 0.01, 0, 0]), rot, -rot @ pos, (320, 240)))
    return cams


def test_c_exported_triangulation_reads_back(tmp_path):
    from PIL import Image

    from annotator.eval import mocap_export, multiview

    cams = _ring_cameras()
    views = [multiview.View(c.name, c, tmp_path) for c in cams]
    frames = {c.name: {7: np.full((240, 320, 3), 40 * i, np.uint8)} for i, c in enumerate(cams)}
    world = _person(5) - [0, 0, 3500] + [0, 0, 900]  # around the origin, z up is fine for the check
    valid = np.ones(12, bool)
    valid[3] = False  # one joint not triangulated
    refs = [multiview.Reference(7, 0, world, valid, 3, {})]
    path = mocap_export.export_triangulation(tmp_path / "mocap", views, frames, refs, LIMB_NAMES, world_up=(0, 0, 1))
    data = mocap_data.load(path.parent)
    assert len(data) == 3 and data.frame == "world" and data.groups["camera"] == ["cam0", "cam1", "cam2"]
    assert data.world_up == (0.0, 0.0, 1.0) and data.joint_names == LIMB_NAMES
    for i, c in enumerate(cams):
        expected = world @ c.rotation.T + c.translation  # the camera frame of that view
        np.testing.assert_allclose(data.joints[i][valid], expected[valid], atol=1e-6)
        assert np.isnan(data.joints[i][3]).all()
        np.testing.assert_allclose(data.intrinsics[i], c.intrinsics)
        assert data.distortion[i].tolist() == [-0.05, 0.01, 0, 0]
        assert np.asarray(Image.open(data.image_path(i))).max() == 40 * i  # that view's frame, lossless


@pytest.mark.slow
def test_c_bundled_clip_scores_alike_in_both_commands(estimator, tmp_path):
    """Demo_SinglePerson's triangulation exported, then scored by ``eval mocap``: the same frames,
    cameras and model give the same predictions, so each view's numbers equal ``eval multiview``'s."""
    from annotator.eval import multiview

    from .conftest import SAMPLES

    out = tmp_path / "mv"
    multiview.run(SAMPLES / "pose2sim" / "Demo_SinglePerson", out,
                  multiview.Settings(frames=1, export_mocap=True), model=estimator)
    summary = mocap.run(out / "mocap", tmp_path / "mc", mocap.Settings(), model=estimator)
    mv = {r["view"]: r for r in csv.DictReader(open(out / "people.csv"))}
    mc = {r["camera"]: r for r in csv.DictReader(open(tmp_path / "mc" / "people.csv")) if r["matched"] == "True"}
    assert mv and set(mc) == set(mv) and summary["root"] == "hip midpoint"
    for view, r in mv.items():
        for key in ("root_relative_mpjpe_mm", "root_error_mm", "root_depth_bias_mm", "pa_mpjpe_mm", "limb_scale",
                    "pck"):  # measured: equal to 1e-5 mm (the same predictions; float32 world <-> camera)
            assert float(mc[view][key]) == pytest.approx(float(r[key]), abs=1e-3), (view, key)
