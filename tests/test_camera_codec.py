"""The camera codec: every JSON form a user may write, and the round trips between the forms the
pipeline carries a camera in (JSON, flat lists, batch columns), which must give the same camera."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.labels import camera_codec
from annotator.labels.camera_codec import Camera

K = [[500, 0, 320], [0, 510, 240], [0, 0, 1]]


def _ext() -> np.ndarray:
    ext = np.eye(4, dtype=np.float32)
    ext[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    ext[:3, 3] = [100.0, -200.0, 3000.5]
    return ext


CAMERAS = [
    Camera(np.asarray(K, np.float32), "calibration"),
    Camera(np.asarray(K, np.float32), "sidecar", np.asarray([0.1, -0.2, 0, 0, 0.01], np.float32), _ext()),
    Camera(np.asarray(K, np.float32) * 1.1, "manifest", np.asarray([0.25] * 12, np.float32), None),
]


def assert_same(got: Camera | None, want: Camera) -> None:
    assert got is not None and got.source == want.source
    np.testing.assert_array_equal(got.intrinsics, want.intrinsics)
    assert got.intrinsics.shape == (3, 3) and got.intrinsics.dtype == np.float32
    np.testing.assert_array_equal(got.distortion, want.distortion)
    if want.extrinsics is None:
        assert got.extrinsics is None
    else:
        np.testing.assert_array_equal(got.extrinsics, want.extrinsics)
        assert got.extrinsics.shape == (4, 4)


def test_json_forms():
    cam = camera_codec.from_json(json.dumps({"K": K, "dist": [0.1, -0.2, 0, 0, 0.01]}))
    np.testing.assert_allclose(cam.intrinsics, K)
    np.testing.assert_allclose(cam.distortion, [0.1, -0.2, 0, 0, 0.01])
    assert cam.extrinsics is None and cam.source == "sidecar"
    cam = camera_codec.from_json({"intrinsic_matrix": sum(K, []), "R": np.eye(3).tolist(), "t": [10, 20, 30]},
                                 "calibration")
    assert cam.source == "calibration"
    np.testing.assert_allclose(cam.extrinsics[:3, 3], [10, 20, 30])
    cam = camera_codec.from_json({"intrinsics": K, "extrinsics": np.eye(4)[:3].tolist()})
    np.testing.assert_allclose(cam.extrinsics, np.eye(4))
    # a user's file cannot name its own source; a plan's shard camera (source=None) does
    assert camera_codec.from_json({"K": K, "source": "exif"}, "sidecar").source == "sidecar"
    assert camera_codec.from_json({"K": K, "source": "calibration"}, None).source == "calibration"


@pytest.mark.parametrize("doc, message", [
    ({"dist": [0.1]}, "no intrinsics"),
    ({"K": [1, 2, 3]}, "reshape|size"),
    ({"K": [[float("nan")] * 3] * 3}, "non-finite"),
    ([1, 2], "must be an object"),
])
def test_bad_camera_json(doc, message):
    with pytest.raises(ValueError, match=message):
        camera_codec.from_json(doc)


@pytest.mark.parametrize("cam", CAMERAS)
def test_json_round_trip(cam):
    assert_same(camera_codec.from_json(camera_codec.to_json(cam), None), cam)


@pytest.mark.parametrize("cam", CAMERAS)
def test_lists_round_trip(cam):
    k, d, x, source = camera_codec.to_lists(cam)
    assert len(k) == 9 and (x is None or len(x) == 16)
    assert_same(camera_codec.from_lists(k, d, x, source), cam)
    assert camera_codec.to_lists(None) == (None, None, None, None) and camera_codec.from_lists(None, d, x, "") is None
    assert camera_codec.from_lists(k, None, None, None).source == "given"


def test_columns_round_trip_and_not_given():
    cols = camera_codec.columns(len(CAMERAS) + 1)
    for i, cam in enumerate(CAMERAS):
        camera_codec.put(cols, i, cam)
    camera_codec.put(cols, len(CAMERAS), None)
    assert cols["intrinsics"].shape == (4, 3, 3) and cols["extrinsics"].shape == (4, 4, 4)
    assert cols["distortion"].shape == (4, camera_codec.MAX_DISTORTION)
    for i, cam in enumerate(CAMERAS):
        assert_same(camera_codec.take(cols, i), cam)
    assert camera_codec.take(cols, len(CAMERAS)) is None and cols["camera_source"][len(CAMERAS)] == ""


def test_columns_trim_padding_and_cut_extra_coefficients():
    cols = camera_codec.columns(2)
    camera_codec.put(cols, 0, Camera(np.eye(3, dtype=np.float32), "sidecar", np.asarray([0.1, 0, 0, 0, 0], np.float32)))
    camera_codec.put(cols, 1, Camera(np.eye(3, dtype=np.float32), "sidecar", np.arange(1, 15, dtype=np.float32)))
    np.testing.assert_array_equal(camera_codec.take(cols, 0).distortion, np.float32([0.1]))  # zeros are no coefficients
    np.testing.assert_array_equal(camera_codec.take(cols, 1).distortion, np.arange(1, 13))


def test_every_form_in_a_chain_gives_the_same_camera():
    """Calibration JSON -> plan shard table -> read batch -> decode batch -> label row."""
    cam = camera_codec.from_json({"K": K, "dist": [0.1, -0.2, 0, 0, 0.01], "extrinsics": _ext().tolist()},
                                 "calibration")
    shard_json = camera_codec.to_json(cam)
    read = camera_codec.columns(1)
    camera_codec.put(read, 0, camera_codec.from_json(shard_json, None))
    decoded = camera_codec.columns(1)
    camera_codec.put(decoded, 0, camera_codec.take(read, 0))
    k, d, x, source = camera_codec.to_lists(camera_codec.take(decoded, 0))
    assert_same(camera_codec.from_lists(k, d, x, source), cam)
