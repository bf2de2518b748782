"""The inference stage: per-augmentation poses -> TTA means equal to the model's own averaging,
a quality score per person, and ``min_quality`` dropping exactly the people below it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from annotator.pipeline.decode import default_intrinsics
from annotator.pipeline.infer import ImageInput, InferenceSettings, PoseInference

from .conftest import load_rgb

pytestmark = pytest.mark.slow  # loads the default model


@pytest.fixture(scope="module")
def stage(default_model_path):
    return PoseInference(str(default_model_path), InferenceSettings(num_aug=3))


def _input(samples_dir, name):
    image = load_rgb(samples_dir / name)
    h, w = image.shape[:2]
    return ImageInput(image, default_intrinsics(w, h), np.zeros(0, np.float32), None)


def test_means_match_the_models_averaging_and_quality_is_a_score(stage, samples_dir):
    item = _input(samples_dir, "pose2sim_cam02_f030.jpg")
    (pred,) = stage([item])
    assert len(pred.boxes) >= 1
    assert pred.quality is not None and np.all((pred.quality > 0) & (pred.quality <= 1))
    ref = stage.model.detect_poses(item.image, intrinsic_matrix=item.intrinsics, num_aug=3, average_aug=True)
    # the body size step scales each person about the camera centre (no extrinsics: the origin), so
    # the model's mean pose comes back times one factor per person, and its 2D as it was
    ref3d = ref["poses3d"].numpy()
    factor = np.linalg.norm(pred.poses3d, axis=-1) / np.linalg.norm(ref3d, axis=-1)
    assert np.ptp(factor, axis=-1).max() < 1e-3 and np.all(np.abs(factor[:, 0] - 1) < 0.35)
    np.testing.assert_allclose(pred.poses3d, ref3d * factor[:, :1, None], atol=0.5)
    np.testing.assert_allclose(pred.poses2d, ref["poses2d"].numpy(), atol=0.05)
    np.testing.assert_allclose(pred.boxes, ref["boxes"].numpy(), atol=1e-4)
    # without the population prior the stage returns the model's own average
    plain = PoseInference(stage.model, dataclasses.replace(stage.settings, body_prior=False))
    np.testing.assert_allclose(plain([item])[0].poses3d, ref3d, atol=0.5)
    # every person carries calibrated sigmas: per joint and for the depth
    assert pred.joint_sigma_mm.shape == pred.poses3d.shape[:2] and np.all(pred.joint_sigma_mm > 0)
    assert np.all(pred.depth_sigma_mm > 0)


def test_min_quality_drops_exactly_the_people_below(stage, samples_dir):
    items = [_input(samples_dir, n) for n in ("pose2sim_cam01_f030.jpg", "pose2sim_cam04_f030.jpg", "camera.png")]
    preds = stage(items)
    values = np.concatenate([p.quality for p in preds])
    assert len(values) >= 3 and len(np.unique(values)) >= 2
    cut = float(np.median(values))
    strict = PoseInference.__new__(PoseInference)
    strict.__dict__.update(stage.__dict__)
    strict.settings = dataclasses.replace(stage.settings, min_quality=cut)
    kept = strict(items)
    for before, after in zip(preds, kept, strict=True):
        np.testing.assert_array_equal(after.quality, before.quality[before.quality >= cut])
        assert len(after.boxes) == len(after.poses3d) == len(after.quality)


def test_warm_up_takes_the_job_call_path_and_changes_no_result(stage, samples_dir):
    """The actor's warm-up call uses the job's own arguments (a model that rejected them would fail
    here, not on the first real batch) and leaves later predictions as they were."""
    item = _input(samples_dir, "pose2sim_cam02_f030.jpg")
    (before,) = stage([item])
    seconds = stage.warm_up()
    assert seconds > 0 and stage.warmup_seconds == seconds
    (after,) = stage([item])
    np.testing.assert_array_equal(after.poses3d, before.poses3d)
    np.testing.assert_array_equal(after.quality, before.quality)


def test_a_derived_skeleton_is_mapped_from_the_native_joints_as_the_model_maps_it(default_model_path, samples_dir):
    """coco_19 asked of an annotator model: the stage takes the native joints (so the ground plane
    sees toes and heels) and maps them itself; the labels equal the model's own coco_19 output."""
    stage = PoseInference(str(default_model_path), InferenceSettings(num_aug=1, skeleton="coco_19", body_prior=False))
    assert stage._joint_map is not None and stage._joint_map.shape == (19, 33)
    item = _input(samples_dir, "pose2sim_cam02_f030.jpg")
    (pred,) = stage([item])
    ref = stage.model.detect_poses(item.image, intrinsic_matrix=item.intrinsics, num_aug=1, skeleton="coco_19")
    assert pred.poses3d.shape[1:] == (19, 3) and pred.joint_confidences.shape[1:] == (19,)
    np.testing.assert_allclose(pred.poses3d, ref["poses3d"].numpy(), atol=0.05)
    np.testing.assert_allclose(pred.poses2d, ref["poses2d"].numpy(), atol=0.01)
    np.testing.assert_allclose(pred.joint_confidences, ref["joint_confidences"].numpy(), atol=1e-5)


def test_the_ground_plane_moves_people_along_their_rays_onto_the_floor(default_model_path, samples_dir):
    """A Pose2Sim view with its calibration (Qualisys: z up, the floor at z = 0): the person's
    depth comes from the floor, the 2D stays, and the move is a scaling about the camera centre."""
    from annotator.eval import calibration
    from annotator.labels import ground_plane

    cam = calibration.load(samples_dir.parent / "pose2sim" / "Demo_SinglePerson" / "calibration")[0]
    image = load_rgb(samples_dir / "pose2sim_cam01_f030.jpg")
    item = ImageInput(image, cam.intrinsics, cam.distortion, cam.extrinsics)
    settings = InferenceSettings(num_aug=1, world_up_vector=(0.0, 0.0, 1.0))
    (mono,) = PoseInference(str(default_model_path), dataclasses.replace(settings, ground_plane=False))([item])
    (ground,) = PoseInference(str(default_model_path), settings)([item])
    assert mono.depth_source == ["monocular"] and ground.depth_source == ["ground_plane"]
    np.testing.assert_allclose(ground.poses2d, mono.poses2d, atol=1e-3)
    centre = ground_plane.camera_centre(cam.extrinsics)
    ratio = np.linalg.norm(ground.poses3d[0] - centre, axis=-1) / np.linalg.norm(mono.poses3d[0] - centre, axis=-1)
    assert np.ptp(ratio) < 1e-3 and ratio[0] != pytest.approx(1.0, abs=1e-3)
    lowest_toe = min(ground.poses3d[0][[31, 32], 2])
    assert lowest_toe == pytest.approx(ground_plane.FOOT_HEIGHTS_MM["toe"], abs=40.0)
    # the floor's uncertainty is smaller than the monocular prior's
    assert ground.depth_sigma_mm[0] < mono.depth_sigma_mm[0]
