"""Camera JSON (sidecars, calibration files) and already-decoded frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator import decode


def test_camera_json_forms():
    k = [[500, 0, 320], [0, 510, 240], [0, 0, 1]]
    cam = decode.camera_from_json(json.dumps({"K": k, "dist": [0.1, -0.2, 0, 0, 0.01]}))
    np.testing.assert_allclose(cam.intrinsics, k)
    np.testing.assert_allclose(cam.distortion, [0.1, -0.2, 0, 0, 0.01])
    assert cam.extrinsics is None and cam.source == "sidecar"
    cam = decode.camera_from_json({"intrinsic_matrix": sum(k, []), "R": np.eye(3).tolist(), "t": [10, 20, 30]},
                                  "calibration")
    assert cam.source == "calibration"
    np.testing.assert_allclose(cam.extrinsics[:3, 3], [10, 20, 30])
    cam = decode.camera_from_json({"intrinsics": k, "extrinsics": np.eye(4)[:3].tolist()})
    np.testing.assert_allclose(cam.extrinsics, np.eye(4))


@pytest.mark.parametrize("doc, message", [
    ({"dist": [0.1]}, "no intrinsics"),
    ({"K": [1, 2, 3]}, "reshape|size"),
    ({"K": [[float("nan")] * 3] * 3}, "non-finite"),
    ([1, 2], "must be an object"),
])
def test_bad_camera_json(doc, message):
    with pytest.raises(ValueError, match=message):
        decode.camera_from_json(doc)


def test_from_array_uses_the_given_camera_or_the_default_fov():
    frame = np.zeros((20, 30, 3), np.uint8)
    dec = decode.from_array(frame)
    assert dec.ok and (dec.width, dec.height) == (30, 20) and dec.camera.source == "default_fov"
    cam = decode.Camera(np.eye(3, dtype=np.float32), "calibration")
    assert decode.from_array(frame, cam).camera is cam
    assert decode.from_array(np.zeros((20, 30), np.uint8)).error.startswith("unsupported_image")
