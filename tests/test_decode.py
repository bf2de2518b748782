"""Already-decoded frames (videos) take the given camera or the default field of view."""

from __future__ import annotations

import numpy as np

from annotator import decode
from annotator.camera_codec import Camera


def test_from_array_uses_the_given_camera_or_the_default_fov():
    frame = np.zeros((20, 30, 3), np.uint8)
    dec = decode.from_array(frame)
    assert dec.ok and (dec.width, dec.height) == (30, 20) and dec.camera.source == "default_fov"
    cam = Camera(np.eye(3, dtype=np.float32), "calibration")
    assert decode.from_array(frame, cam).camera is cam
    assert decode.from_array(np.zeros((20, 30), np.uint8)).error.startswith("unsupported_image")
