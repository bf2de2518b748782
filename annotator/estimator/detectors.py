"""Person detectors behind one small interface: images in, ragged boxes (x, y, w, h, score) out.

The default is MoveNet-MultiPose (Apache-2.0, converted from TFJS). It runs on one image at a time
(its graph squeezes the batch axis), on a letterboxed copy whose sides are multiples of 32.

Recall: at its native 256 px MoveNet misses people who are small or cut off by the image border
(2 of 4 on Ultralytics' bus.jpg). We therefore look at each image through several *views* and
pool the candidates before NMS: the whole image at 256 px, and the image padded by 20 % on every
side at 512 px (people at the border are no longer at the network input's edge, and small people
get twice the pixels). Measured on bus.jpg + the 6 sample photos at the default threshold 0.3:
bus 2/4 -> 3/4, samples 6/6 -> 6/6, no false positives or duplicates (docs/models.md).
"""

from __future__ import annotations

import tensorflow as tf

# MoveNet's 17 keypoints (COCO order), named as BlazePose names the same joints.
KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
KEYPOINT_MIRROR = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# a detection row: box (x, y, w, h, score), then keypoints (x, y, score) in image pixels
DETECTION_WIDTH = 5 + 3 * NUM_KEYPOINTS


class MoveNetMultiPose(tf.Module):
    """Wraps the converted MoveNet-MultiPose SavedModel (``input`` int32 [1,H,W,3] -> [1,6,56]).

    Each detection keeps MoveNet's 17 keypoints and their scores: the crop model never sees them,
    but they are a second, independent 2D opinion of the person (``detector_keypoints``), which the
    quality score compares with the crop model's."""

    max_people = 6

    # (network input long side, zero padding added on each side as a fraction of the image size)
    DEFAULT_VIEWS = ((256, 0.0), (512, 0.2))

    def __init__(self, saved_model, views=DEFAULT_VIEWS, name=None):
        super().__init__(name=name)
        self.model = saved_model
        self.views = tuple((int(size), float(pad)) for size, pad in views)
        # The network as one function that TensorFlow's graph optimizer (Grappler) optimises once
        # and never inlines: called per view, and again in the flip pass, it was inlined four times
        # into the graph a first call optimises (13,150 -> 8,658 nodes without; first call ~6.1 ->
        # ~4.7 s on the 2-core machine; per-batch time unchanged, outputs bit-identical).
        self._network = tf.function(
            lambda net_in: self.model.signatures["serving_default"](input=net_in)["output_0"],
            input_signature=[tf.TensorSpec((1, None, None, 3), tf.int32)],
            experimental_attributes={"_noinline": True})

    @property
    def candidates_per_image(self) -> int:
        return self.max_people * len(self.views)

    def _detect_one(self, image):
        """image: float32 [H,W,3] in 0..255. Returns [6 x views, DETECTION_WIDTH] detections in pixels."""
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        # shrink the full-resolution image once, to the largest size any view needs
        largest = max(size / (1.0 + 2.0 * pad) for size, pad in self.views)
        base_scale = tf.minimum(largest / tf.reduce_max(hw), 1.0)
        base = tf.image.resize(image, tf.maximum(tf.cast(tf.round(hw * base_scale), tf.int32), 1), antialias=True)
        return tf.concat([self._detect_view(base, hw, size, pad) for size, pad in self.views], axis=0)

    def _detect_view(self, base, hw, input_size, pad_fraction):
        """One view of an image of size ``hw`` (``base`` is it shrunk): shrunk so that, with
        ``pad_fraction`` of zero border on each side, its long side is ``input_size``; resized before
        padding, so the cost follows the output size."""
        scale = float(input_size) / (tf.reduce_max(hw) * (1.0 + 2.0 * pad_fraction))
        new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
        resized = tf.image.resize(base, new_hw, antialias=True)
        pad = tf.cast(tf.round(hw * scale * pad_fraction), tf.int32)
        content_hw = new_hw + 2 * pad
        padded_hw = (content_hw + 31) // 32 * 32
        padded = tf.image.pad_to_bounding_box(resized, pad[0], pad[1], padded_hw[0], padded_hw[1])
        net_in = tf.cast(tf.round(tf.clip_by_value(padded, 0.0, 255.0)), tf.int32)[tf.newaxis]
        out = self._network(net_in)[0]
        # normalised to the padded network input -> network pixels (edges) -> source pixels (centres)
        net_hw = tf.cast(padded_hw, tf.float32)
        pad_f = tf.cast(pad, tf.float32)
        s_hw = tf.cast(new_hw, tf.float32) / hw  # per-axis scale actually applied
        ymin, xmin, ymax, xmax, score = tf.unstack(out[:, 51:56], axis=-1)
        x0 = (xmin * net_hw[1] - pad_f[1]) / s_hw[1] - 0.5
        y0 = (ymin * net_hw[0] - pad_f[0]) / s_hw[0] - 0.5
        w = (xmax - xmin) * net_hw[1] / s_hw[1]
        h = (ymax - ymin) * net_hw[0] / s_hw[0]
        kp = tf.reshape(out[:, :51], [-1, NUM_KEYPOINTS, 3])  # (y, x, score), normalised
        kx = (kp[..., 1] * net_hw[1] - pad_f[1]) / s_hw[1] - 0.5
        ky = (kp[..., 0] * net_hw[0] - pad_f[0]) / s_hw[0] - 0.5
        keypoints = tf.reshape(tf.stack([kx, ky, kp[..., 2]], -1), [-1, 3 * NUM_KEYPOINTS])
        return tf.concat([tf.stack([x0, y0, w, h, score], axis=-1), keypoints], axis=-1)

    # A tf.function with a fixed signature: every exported function (and the flipped pass) calls
    # this one concrete function, so the SavedModel stores the detector graph once (and, not
    # inlined, Grappler optimises it once).
    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")],
                 experimental_attributes={"_noinline": True})
    def candidates(self, images):
        """uint8 [N,H,W,3] -> [N, 6 x views, DETECTION_WIDTH] unfiltered candidates."""
        return tf.map_fn(self._detect_one, tf.cast(images, tf.float32),
                         fn_output_signature=tf.TensorSpec([self.candidates_per_image, DETECTION_WIDTH], tf.float32))

    def detect(self, images, threshold, nms_iou_threshold, max_detections, flip_aug):
        """images: uint8 [N,H,W,3]. Returns a RaggedTensor [N, None, DETECTION_WIDTH] sorted by score:
        box (x, y, w, h, score), then the 17 keypoints (x, y, score)."""
        raw = self.candidates(images)
        if flip_aug:
            width = tf.cast(tf.shape(images)[2], tf.float32)
            raw = tf.concat([raw, unflip(self.candidates(images[:, :, ::-1]), width)], axis=1)
        return select_boxes(raw, threshold, nms_iou_threshold, max_detections)


def unflip(detections, width) -> tf.Tensor:
    """Detections [..., DETECTION_WIDTH] of a horizontally mirrored image -> the image's own frame
    (boxes and keypoints mirrored back, left and right keypoints exchanged)."""
    fx = width - 1.0 - detections[..., 0] - detections[..., 2]
    kp = tf.reshape(detections[..., 5:], tf.concat([tf.shape(detections)[:-1], [NUM_KEYPOINTS, 3]], 0))
    kp = tf.gather(kp, KEYPOINT_MIRROR, axis=-2)
    kp = tf.concat([width - 1.0 - kp[..., :1], kp[..., 1:]], -1)
    return tf.concat([fx[..., tf.newaxis], detections[..., 1:5],
                      tf.reshape(kp, tf.concat([tf.shape(detections)[:-1], [3 * NUM_KEYPOINTS]], 0))], -1)


def select_boxes(raw, threshold, nms_iou_threshold, max_detections) -> tf.RaggedTensor:
    """Threshold, per-image NMS and top-k on padded candidates raw [N, M, C] (box first) ->
    ragged [N, None, C], every column of a kept candidate kept."""
    m = tf.shape(raw)[1]
    limit = tf.where(max_detections > -1, tf.minimum(max_detections, m), m)

    def one(cands):
        x, y, w, h, score = tf.unstack(cands[:, :5], axis=-1)
        corners = tf.stack([y, x, y + h, x + w], axis=-1)
        keep = tf.image.non_max_suppression(corners, score, max_output_size=limit,
                                            iou_threshold=nms_iou_threshold, score_threshold=threshold)
        kept = tf.gather(cands, keep)
        count = tf.shape(keep)[0]
        return tf.pad(kept, [[0, m - count], [0, 0]]), count

    padded, counts = tf.map_fn(one, raw, fn_output_signature=(
        tf.TensorSpec([None, raw.shape[-1]], tf.float32), tf.TensorSpec([], tf.int32)))
    mask = tf.range(m)[tf.newaxis] < counts[:, tf.newaxis]
    return tf.ragged.boolean_mask(padded, mask)
