"""Person detectors behind one small interface: images in, ragged boxes (x, y, w, h, score) out.

The default is MoveNet-MultiPose (Apache-2.0, converted from TFJS). It runs on one image at a time
(its graph squeezes the batch axis), on a letterboxed copy whose sides are multiples of 32.
"""

from __future__ import annotations

import tensorflow as tf


class MoveNetMultiPose(tf.Module):
    """Wraps the converted MoveNet-MultiPose SavedModel (``input`` int32 [1,H,W,3] -> [1,6,56])."""

    max_people = 6

    def __init__(self, saved_model, input_size: int = 256, name=None):
        super().__init__(name=name)
        self.model = saved_model
        self.input_size = input_size

    def _detect_one(self, image):
        """image: float32 [H,W,3] in 0..255. Returns [6,5] boxes (x,y,w,h,score) in pixels."""
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = float(self.input_size) / tf.reduce_max(shape)
        new_hw = tf.cast(tf.round(shape * scale), tf.int32)
        resized = tf.image.resize(image, new_hw, antialias=True)
        padded_hw = (new_hw + 31) // 32 * 32
        padded = tf.image.pad_to_bounding_box(resized, 0, 0, padded_hw[0], padded_hw[1])
        net_in = tf.cast(tf.round(tf.clip_by_value(padded, 0.0, 255.0)), tf.int32)[tf.newaxis]
        out = self.model.signatures["serving_default"](input=net_in)["output_0"][0]
        # normalised to the padded network input: back to source pixels (centre convention)
        hw_in = tf.cast(padded_hw, tf.float32) / scale
        ymin, xmin, ymax, xmax, score = tf.unstack(out[:, 51:56], axis=-1)
        x0 = xmin * hw_in[1] - 0.5
        y0 = ymin * hw_in[0] - 0.5
        w = (xmax - xmin) * hw_in[1]
        h = (ymax - ymin) * hw_in[0]
        return tf.stack([x0, y0, w, h, score], axis=-1)

    def detect(self, images, threshold, nms_iou_threshold, max_detections, flip_aug):
        """images: uint8 [N,H,W,3]. Returns a RaggedTensor [N, None, 5] sorted by score."""
        images = tf.cast(images, tf.float32)
        raw = tf.map_fn(self._detect_one, images,
                        fn_output_signature=tf.TensorSpec([self.max_people, 5], tf.float32))
        if flip_aug:
            width = tf.cast(tf.shape(images)[2], tf.float32)
            flipped = tf.map_fn(self._detect_one, images[:, :, ::-1],
                                fn_output_signature=tf.TensorSpec([self.max_people, 5], tf.float32))
            fx = width - 1.0 - flipped[..., 0] - flipped[..., 2]
            flipped = tf.concat([fx[..., tf.newaxis], flipped[..., 1:]], -1)
            raw = tf.concat([raw, flipped], axis=1)
        return select_boxes(raw, threshold, nms_iou_threshold, max_detections)


def select_boxes(raw, threshold, nms_iou_threshold, max_detections) -> tf.RaggedTensor:
    """Threshold, per-image NMS and top-k on padded candidates raw [N, M, 5] -> ragged [N, None, 5]."""
    n = tf.shape(raw)[0]
    m = tf.shape(raw)[1]
    x, y, w, h, score = tf.unstack(raw, axis=-1)
    corners = tf.stack([y, x, y + h, x + w], axis=-1)
    limit = tf.where(max_detections > -1, tf.minimum(max_detections, m), m)
    nms = tf.image.combined_non_max_suppression(
        corners[:, :, tf.newaxis], score[..., tf.newaxis], max_output_size_per_class=m,
        max_total_size=m, iou_threshold=nms_iou_threshold, score_threshold=threshold,
        clip_boxes=False)
    counts = tf.minimum(nms.valid_detections, limit)
    b = nms.nmsed_boxes
    boxes = tf.stack([b[..., 1], b[..., 0], b[..., 3] - b[..., 1], b[..., 2] - b[..., 0],
                      nms.nmsed_scores], axis=-1)
    mask = tf.range(m)[tf.newaxis] < counts[:, tf.newaxis]
    del n
    return tf.ragged.boolean_mask(boxes, mask)
