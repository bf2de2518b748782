"""Crop models behind one small protocol: a batch of square crops + their cameras -> absolute 3D.

A crop model declares

- ``input_resolution`` r: crops are r x r;
- value range: ``predict`` always receives float32 sRGB in [0, 1]; an adapter converts to what its
  network wants (BlazePose: float32 [0,1]; official MeTRAbs: float16 [0,1]);
- ``box_scale``, the padding convention: the crop shows ``box_scale`` x the longer side of a tight
  person box (BlazePose wants 1.25, MeTRAbs none: 1.0);
- ``skeleton``: the joints it predicts (names, edges, left/right pairs for un-mirroring);

and ``predict(crops, crop_intrinsics, reconstruction)`` (crops [K,r,r,3], virtual-camera intrinsics
[K,3,3], ``reconstruct.reconstruct_absolute``'s method where the adapter lifts 2D + relative 3D itself)
returning:

- ``poses3d`` [K,J,3]: absolute millimetres in the crop camera frame;
- ``coords2d`` [K,J,2]: the network's own 2D joint positions in crop pixels (pixel-centre
  convention), used to report raw 2D next to the reprojected 3D;
- ``joint_confidences`` [K,J] in [0,1];
- ``pose_scores`` [K] in [0,1].

It may also offer ``alignment(crops)`` (a second, re-centred crop pass, see ``BlazePoseGHUM``).

The official MeTRAbs ``crop_model.predict_multi`` already returns absolute 3D from (crops, K').
BlazePose GHUM 3D returns 2D crop pixels plus hip-centred metric 3D, which we lift to absolute 3D
with ``reconstruct.reconstruct_absolute``.
"""

from __future__ import annotations

import math

import tensorflow as tf

from annotator.estimator import camera, reconstruct, skeletons


class BlazePoseGHUM(tf.Module):
    """Adapter for a converted BlazePose GHUM 3D landmark SavedModel (lite, full or heavy).

    Outputs of the network: ``ld_3d`` [K,195] = 39 x (x, y, z, visibility logit, presence logit),
    x/y in crop pixels with 0 at the crop's left/top edge; ``world_3d`` [K,117] = 39 x 3 metres,
    hip-centred, axes aligned with the crop (x right, y down, z away); ``output_poseflag`` [K,1].
    Landmarks 33 (hip centre) and 34 (a point above the head) define MediaPipe's alignment ROI.
    """

    input_resolution = 256
    num_joints = 33
    skeleton = skeletons.BLAZEPOSE_33
    # MediaPipe's ROI side is 1.25 x the body-size diameter; for a tight person box that is about
    # 1.25 x its longer side.
    box_scale = 1.25

    def __init__(self, saved_model, name=None):
        super().__init__(name=name)
        self.model = saved_model

    def _run(self, crops):
        out = self.model.signatures["serving_default"](input_1=crops)
        ld = tf.reshape(out["ld_3d"], [-1, 39, 5])
        world = tf.reshape(out["world_3d"], [-1, 39, 3])
        return ld, world, out["output_poseflag"][:, 0]

    def predict(self, crops, crop_intrinsics, reconstruction: str = "blend"):
        ld, world, flag = self._run(crops)
        coords2d = ld[:, :33, :2] - 0.5  # edge-based -> pixel-centre convention
        conf = tf.sigmoid(ld[:, :33, 3]) * tf.sigmoid(ld[:, :33, 4])
        rel3d = world[:, :33] * 1000.0
        poses3d = reconstruct.reconstruct_absolute(
            coords2d, rel3d, crop_intrinsics, conf, self.input_resolution, method=reconstruction)
        return {"poses3d": poses3d, "coords2d": coords2d, "joint_confidences": conf, "pose_scores": flag}

    def alignment(self, crops):
        """MediaPipe's second-pass ROI from landmarks 33/34, in crop pixels.

        Returns (centre [K,2], side [K], roll [K] radians, ok [K]): a square ROI of side
        2.5 x |p34 - p33| centred on the hip centre, rotated so the body points up; ``ok`` is
        False where the model saw no person (then the first ROI should be kept).
        """
        ld, _, flag = self._run(crops)
        hip = ld[:, 33, :2] - 0.5
        top = ld[:, 34, :2] - 0.5
        d = top - hip
        side = 2.0 * tf.norm(d, axis=-1) * 1.25
        roll = math.pi / 2.0 - tf.atan2(-d[:, 1], d[:, 0])
        ok = tf.logical_and(flag > 0.5, side > 4.0)
        return hip, side, roll, ok


class BlazePoseEnsemble(BlazePoseGHUM):
    """Several BlazePose GHUM 3D networks (e.g. full + heavy) on the same crops, outputs averaged
    before anything is derived from them: landmarks, logits, metric 3D and the presence flag.

    Averaging networks that were trained separately reduces each one's own errors; every
    downstream step (alignment, reconstruction, confidences) sees one BlazePose-shaped output.
    """

    def __init__(self, saved_models, name=None):
        super().__init__(saved_models[0], name=name)
        self.models = list(saved_models)

    def _run(self, crops):
        outs = [m.signatures["serving_default"](input_1=crops) for m in self.models]
        ld = tf.add_n([tf.reshape(o["ld_3d"], [-1, 39, 5]) for o in outs]) / len(outs)
        world = tf.add_n([tf.reshape(o["world_3d"], [-1, 39, 3]) for o in outs]) / len(outs)
        flag = tf.add_n([o["output_poseflag"][:, 0] for o in outs]) / len(outs)
        return ld, world, flag


class MetrabsCropModel(tf.Module):
    """Adapter for the official MeTRAbs ``crop_model`` (``predict_multi(f16 crops, K) -> mm``).

    The official crop model already returns absolute 3D in the crop camera, so only the value
    range (float16) and the missing outputs differ: 2D is the projection of the 3D, confidences
    and scores are 1 (it has none). ``joint_names``/``joint_edges`` come from the loaded model
    (the 2023 models' ``per_skeleton_joint_names['']``-style attributes, read at build time).
    """

    box_scale = 1.0

    def __init__(self, crop_model, joint_names, joint_edges, name=None):
        super().__init__(name=name)
        self.model = crop_model
        self.input_resolution = int(crop_model.input_resolution)
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in joint_names)
        self.skeleton = skeletons.Skeleton(
            "metrabs_native", names, tuple((int(a), int(b)) for a, b in joint_edges))
        self.num_joints = len(names)

    def predict(self, crops, crop_intrinsics, reconstruction: str = "blend"):
        del reconstruction  # the official crop model reconstructs inside its own graph
        poses3d = self.model.predict_multi(tf.cast(crops, tf.float16), crop_intrinsics)
        poses3d = tf.cast(poses3d, tf.float32)
        k = tf.shape(poses3d)[0]
        return {"poses3d": poses3d,
                "coords2d": camera.project(poses3d, crop_intrinsics),
                "joint_confidences": tf.ones([k, self.num_joints]),
                "pose_scores": tf.ones([k])}
