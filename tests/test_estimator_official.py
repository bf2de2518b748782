"""The crop-model protocol has two implementations: BlazePose (default) and the official MeTRAbs
``crop_model``. The official one cannot be downloaded here, so we export the real BlazePose weights
behind the official interface (``predict_multi(float16 crops in [0,1], K) -> absolute mm``,
``input_resolution``) as a SavedModel, load it back, and check that the MeTRAbs adapter gives what
the BlazePose adapter gives on real crops."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from annotator.estimator import camera, crop_models, crops
from annotator.models import registry

from .conftest import load_rgb

pytestmark = pytest.mark.slow  # loads the real BlazePose weights


class OfficialShapedCropModel(tf.Module):
    """What ``hub.load(metrabs).crop_model`` offers, with BlazePose inside."""

    def __init__(self, blazepose: crop_models.BlazePoseGHUM):
        super().__init__()
        self.inner = blazepose
        self.input_resolution = tf.Variable(256, trainable=False)
        self.joint_names = tf.Variable(list(blazepose.skeleton.joint_names), trainable=False)
        self.joint_edges = tf.Variable(np.array(blazepose.skeleton.edges, np.int32), trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float16),
                                  tf.TensorSpec([None, 3, 3], tf.float32)])
    def predict_multi(self, image, intrinsic_matrix):
        return self.inner.predict(tf.cast(image, tf.float32), intrinsic_matrix)["poses3d"]


def test_metrabs_adapter_matches_blazepose_on_real_crops(samples_dir, tmp_path):
    blaze = crop_models.BlazePoseGHUM(tf.saved_model.load(str(registry.build_component("blazepose-full",
                                                                                         fetch=False))))
    tf.saved_model.save(OfficialShapedCropModel(blaze), str(tmp_path / "crop_model"))
    loaded = tf.saved_model.load(str(tmp_path / "crop_model"))
    adapter = crop_models.MetrabsCropModel(loaded, loaded.joint_names.numpy(), loaded.joint_edges.numpy())
    assert adapter.input_resolution == 256 and adapter.box_scale == 1.0
    assert adapter.skeleton.joint_names == blaze.skeleton.joint_names
    assert adapter.skeleton.mirror_indices() == blaze.skeleton.mirror_indices()

    image = load_rgb(samples_dir / "pose2sim_cam03_f030.jpg")
    k = camera.default_intrinsics(*image.shape[:2], 55.0)[tf.newaxis]
    boxes = np.array([[300.0, 440.0, 130.0, 360.0], [280.0, 420.0, 170.0, 400.0]], np.float32)
    rot, crop_k = crops.virtual_camera(boxes, tf.repeat(k, 2, 0), np.tile([[0.0, -1.0, 0.0]], (2, 1)), 256,
                                       box_scale=1.25)
    lin = crops.warp(crops.to_linear(image[None]), tf.repeat(k, 2, 0), rot, crop_k, 256, [0, 0])
    batch = crops.to_display(lin)
    ours = blaze.predict(batch, crop_k)
    theirs = adapter.predict(batch, crop_k)
    assert theirs["poses3d"].shape == (2, 33, 3) and theirs["coords2d"].shape == (2, 33, 2)
    # float16 input (the official value range) changes BlazePose's answer only slightly
    err = np.linalg.norm(theirs["poses3d"].numpy() - ours["poses3d"].numpy(), axis=-1)
    assert np.median(err) < 15.0, err
    # the adapter's 2D is the projection of its 3D into the crop
    proj = camera.project(theirs["poses3d"], crop_k).numpy()
    np.testing.assert_allclose(theirs["coords2d"].numpy(), proj, atol=1e-3)
    np.testing.assert_allclose(theirs["joint_confidences"].numpy(), 1.0)
