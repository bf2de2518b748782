"""Decoding applies EXIF orientation; already-decoded frames (videos) take the given camera or the
default field of view."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from annotator.labels.camera_codec import Camera
from annotator.pipeline import decode

# EXIF orientation -> how a camera stored an upright picture (the viewer undoes it)
STORED = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          2: Image.Transpose.FLIP_LEFT_RIGHT, 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          7: Image.Transpose.TRANSVERSE}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_decode_returns_the_upright_picture_for_each_exif_orientation(orientation):
    upright = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    stored = Image.fromarray(upright)
    if STORED[orientation] is not None:
        stored = stored.transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)  # lossless: the pixels must come back exactly
    dec = decode.decode(buf.getvalue())
    assert dec.ok and (dec.width, dec.height) == (50, 30)
    np.testing.assert_array_equal(dec.image, upright)


def test_from_array_uses_the_given_camera_or_the_default_fov():
    frame = np.zeros((20, 30, 3), np.uint8)
    dec = decode.from_array(frame)
    assert dec.ok and (dec.width, dec.height) == (30, 20) and dec.camera.source == "default_fov"
    cam = Camera(np.eye(3, dtype=np.float32), "calibration")
    assert decode.from_array(frame, cam).camera is cam
    assert decode.from_array(np.zeros((20, 30), np.uint8)).error.startswith("unsupported_image")
