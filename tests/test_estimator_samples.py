"""The exported default model on the sample photos: sane absolute 3D from real weights.

Bounds from models.md section 8(b). The 2D check compares our 2D (the projection of our 3D) with
an independent model's 2D: MoveNet-MultiPose's own keypoints, on the joints both models see.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from annotator.models import registry

from .conftest import load_rgb

pytestmark = pytest.mark.slow  # loads the default model

# BlazePose index -> MoveNet (COCO-17) index, for joints both predict
BLAZE_TO_COCO = {0: 0, 2: 1, 5: 2, 7: 3, 8: 4, 11: 5, 12: 6, 13: 7, 14: 8, 15: 9, 16: 10,
                 23: 11, 24: 12, 25: 13, 26: 14, 27: 15, 28: 16}
# Forearms are left out: BlazePose-full's are often short (0.14 m) in side views, a model limit.
LIMBS = {"upper_arm_l": (11, 13), "upper_arm_r": (12, 14), "thigh_l": (23, 25), "thigh_r": (24, 26),
         "shin_l": (25, 27), "shin_r": (26, 28), "shoulders": (11, 12), "hips_to_shoulder_l": (11, 23)}
SAMPLES = ["astronaut.png", "camera.png", "pose2sim_cam01_f030.jpg", "pose2sim_cam02_f030.jpg",
           "pose2sim_cam03_f030.jpg", "pose2sim_cam04_f030.jpg"]


@pytest.fixture(scope="module")
def movenet():
    return tf.saved_model.load(str(registry.build_component("movenet-multipose", fetch=False)))


def _movenet_keypoints(movenet, image):
    """MoveNet's 17 keypoints (x, y, score) of its best person, in source pixels."""
    h, w = image.shape[:2]
    scale = 256 / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    resized = tf.image.resize(image.astype(np.float32), (nh, nw), antialias=True)
    ph, pw = (nh + 31) // 32 * 32, (nw + 31) // 32 * 32
    x = tf.image.pad_to_bounding_box(resized, 0, 0, ph, pw)
    out = movenet.signatures["serving_default"](input=tf.cast(tf.round(x), tf.int32)[None])["output_0"]
    best = out.numpy()[0][np.argmax(out.numpy()[0][:, 55])]
    kp = best[:51].reshape(17, 3)
    return np.stack([kp[:, 1] * pw / scale - 0.5, kp[:, 0] * ph / scale - 0.5, kp[:, 2]], -1)


@pytest.mark.parametrize("name", SAMPLES)
def test_detect_poses_on_sample_photo(estimator, movenet, samples_dir, name):
    image = load_rgb(samples_dir / name)
    out = estimator.detect_poses(image, num_aug=1)
    boxes, poses2d, poses3d = (out[k].numpy() for k in ("boxes", "poses2d", "poses3d"))
    conf = out["joint_confidences"].numpy()
    assert len(boxes) >= 1, "the person in every sample photo is found"
    i = int(np.argmax(boxes[:, 4]))
    box, p2, p3, c = boxes[i], poses2d[i], poses3d[i], conf[i]
    assert p2.shape == (33, 2) and p3.shape == (33, 3)
    assert np.isfinite(p2).all() and np.isfinite(p3).all()
    # confident joints lie inside the detection box (with a margin for MoveNet's tight boxes)
    x, y, w, h = box[:4]
    confident = c > 0.5
    assert confident.sum() >= 8
    inside = ((p2[:, 0] > x - 0.25 * w) & (p2[:, 0] < x + 1.25 * w)
              & (p2[:, 1] > y - 0.25 * h) & (p2[:, 1] < y + 1.25 * h))
    assert inside[confident].mean() >= 0.9
    # metric plausibility: limbs whose both ends are confident are 0.15-0.6 m
    lengths = [np.linalg.norm(p3[a] - p3[b]) for a, b in LIMBS.values() if c[a] > 0.5 and c[b] > 0.5]
    assert len(lengths) >= 2
    assert all(150 <= length <= 600 for length in lengths), lengths
    root = (p3[23] + p3[24]) / 2
    assert 500 <= root[2] <= 10_000
    # our 2D agrees with an independent model's 2D on the joints both see well
    kp = _movenet_keypoints(movenet, image)
    pairs = [(b, m) for b, m in BLAZE_TO_COCO.items() if c[b] > 0.5 and kp[m, 2] > 0.3]
    assert len(pairs) >= 5
    err = np.array([p2[b] - kp[m, :2] for b, m in pairs])
    rms = float(np.sqrt((err ** 2).sum(-1).mean()))
    assert rms < 0.1 * h, (rms, h)


def test_batched_equals_one_by_one(estimator, samples_dir):
    images = [load_rgb(samples_dir / n) for n in ("pose2sim_cam01_f030.jpg", "pose2sim_cam02_f030.jpg")]
    batched = estimator.detect_poses_batched(np.stack(images), num_aug=2)
    for j, image in enumerate(images):
        single = estimator.detect_poses(image, num_aug=2)
        for key in ("boxes", "poses2d", "poses3d"):
            np.testing.assert_allclose(batched[key][j].numpy(), single[key].numpy(), rtol=1e-4, atol=0.05)


def test_estimate_poses_with_given_boxes(estimator, samples_dir):
    image = load_rgb(samples_dir / "pose2sim_cam03_f030.jpg")
    det = estimator.detect_poses(image, num_aug=1)
    given = estimator.estimate_poses(image, det["boxes"][:, :4], num_aug=1)
    assert set(given) >= {"poses2d", "poses3d"} and "boxes" not in given
    np.testing.assert_allclose(given["poses3d"].numpy(), det["poses3d"].numpy(), atol=0.5)


def test_unknown_skeleton_is_a_clear_error(estimator, samples_dir):
    image = load_rgb(samples_dir / "astronaut.png")
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown skeleton.*valid"):
        estimator.detect_poses(image, skeleton="smpl_2")


def test_saved_model_loads_without_annotator(default_model_path, tmp_path):
    """A fresh interpreter that never imports annotator can load and call the model."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(default_model_path)!r})\n"
        "out = m.detect_poses(np.zeros((96, 128, 3), np.uint8), num_aug=1)\n"
        "assert out['poses3d'].shape[1:] == (33, 3), out['poses3d'].shape\n"
        "assert not any(k.startswith('annotator') for k in sys.modules)\n"
        "print('people', out['boxes'].shape[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "people 0" in proc.stdout


def test_saved_model_stores_the_estimator_body_once(default_model_path):
    """The four API functions and the serving signature all call one stored ``_estimate`` function
    (and the detector's candidates once): a body copied per API function made the SavedModel
    ~4x larger in graph nodes and its load ~6x slower (19 s vs 3 s here)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((default_model_path / "saved_model.pb").read_bytes())
    library = sm.meta_graphs[0].graph_def.library.function

    def called(f):
        return {a.func.name for n in f.node_def for a in n.attr.values() if a.HasField("func")}

    by_name = {f.signature.name: f for f in library}
    bodies = [n for n in by_name if n.startswith("__inference__estimate_")]
    detectors = [n for n in by_name if n.startswith("__inference_candidates_")]
    assert len(bodies) == 1 and len(detectors) == 1, (bodies, detectors)
    api = [n for n in by_name if n.split("__inference_")[-1].rsplit("_", 1)[0]
           in ("detect_poses", "detect_poses_batched", "estimate_poses", "estimate_poses_batched")]
    assert len(api) == 4, api
    for name in api:
        assert bodies[0] in called(by_name[name]), name


def test_estimate_poses_batched_equals_one_by_one(estimator, samples_dir):
    images = [load_rgb(samples_dir / n) for n in ("pose2sim_cam03_f030.jpg", "pose2sim_cam04_f030.jpg")]
    boxes = [np.array([[300.0, 440.0, 130.0, 360.0]], np.float32),
             np.array([[150.0, 430.0, 600.0, 400.0], [300.0, 450.0, 200.0, 350.0]], np.float32)]
    ragged = tf.ragged.constant([b.tolist() for b in boxes], ragged_rank=1, dtype=tf.float32)
    batched = estimator.estimate_poses_batched(np.stack(images), ragged, num_aug=2)
    assert "boxes" not in batched
    for j, (image, b) in enumerate(zip(images, boxes, strict=True)):
        single = estimator.estimate_poses(image, b, num_aug=2)
        assert batched["poses3d"][j].shape == (len(b), 33, 3)
        for key in ("poses2d", "poses3d"):
            np.testing.assert_allclose(batched[key][j].numpy(), single[key].numpy(), rtol=1e-4, atol=0.05)


def test_exported_options_skeletons_augmentations_lens(estimator, samples_dir):
    image = load_rgb(samples_dir / "pose2sim_cam01_f030.jpg")
    box = np.array([[300.0, 430.0, 330.0, 760.0]], np.float32)
    coco = estimator.estimate_poses(image, box, num_aug=1, skeleton="coco_19")
    assert coco["poses3d"].shape == (1, 19, 3)
    names = [n.decode() for n in estimator.per_skeleton_joint_names["coco_19"].numpy()]
    derived = estimator.per_skeleton_derived_joints["coco_19"].numpy()
    assert [n for n, d in zip(names, derived, strict=True) if d] == ["neck", "pelv"]
    native = estimator.estimate_poses(image, box, num_aug=1)["poses3d"].numpy()[0]
    # pelv = mid-hip of the native joints (left_hip 23, right_hip 24)
    np.testing.assert_allclose(coco["poses3d"].numpy()[0, 2], (native[23] + native[24]) / 2, atol=0.5)

    per_aug = estimator.estimate_poses(image, box, num_aug=3, average_aug=False)
    assert per_aug["poses3d"].shape == (1, 3, 33, 3) and per_aug["poses2d"].shape == (1, 3, 33, 2)

    # supersampling changes pixels, not the answer: same person within a few cm
    aa = estimator.estimate_poses(image, box, num_aug=1, antialias_factor=2)["poses3d"].numpy()[0]
    assert np.median(np.linalg.norm(aa - native, axis=-1)) < 60

    # with a lens model, poses2d is the 3D projected through the distortion
    k = np.array([[1680.0, 0, 540.0], [0, 1680.0, 960.0], [0, 0, 1]], np.float32)
    dist = np.array([-0.2, 0.05, 1e-3, -1e-3, 0.0, 0.0, 0.0, 0.0], np.float32)
    out = estimator.estimate_poses(image, box, intrinsic_matrix=k, distortion_coeffs=dist, num_aug=1)
    p3 = out["poses3d"].numpy()[0]
    n = p3[:, :2] / p3[:, 2:]
    r2 = (n ** 2).sum(-1, keepdims=True)
    xd = n * (1 - 0.2 * r2 + 0.05 * r2 ** 2) + np.stack(
        [2e-3 * n[:, 0] * n[:, 1] - 1e-3 * (r2[:, 0] + 2 * n[:, 0] ** 2),
         1e-3 * (r2[:, 0] + 2 * n[:, 1] ** 2) - 2e-3 * n[:, 0] * n[:, 1]], -1)
    np.testing.assert_allclose(out["poses2d"].numpy()[0], xd * 1680.0 + [540.0, 960.0], atol=0.05)
