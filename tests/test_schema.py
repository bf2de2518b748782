"""Label schema v1: encode -> Parquet -> read back, with people, errors and world frames."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotator.labels import schema
from annotator.labels.camera_codec import Camera
from annotator.labels.schema import REPO_SCHEMA_DIR
from annotator.pipeline import encode


def _records():
    rng = np.random.default_rng(0)
    k = np.array([[1000, 0, 320], [0, 1000, 240], [0, 0, 1]], np.float32)
    ext = np.eye(4, dtype=np.float32)
    ext[:3, 3] = [100.0, -50.0, 2000.0]
    ext[:3, :3] = [[0, 0, -1], [0, 1, 0], [1, 0, 0]]
    world = rng.normal(0, 300, (2, 33, 3)).astype(np.float32)
    pred = encode.Prediction(
        boxes=np.array([[10, 20, 100, 200, 0.9], [50, 60, 80, 160, 0.4]], np.float32),
        poses2d=rng.uniform(0, 640, (2, 33, 2)).astype(np.float32), poses3d=world,
        joint_confidences=rng.uniform(0, 1, (2, 33)).astype(np.float32),
        pose_scores=np.array([0.99, 0.5], np.float32), depth_sigma_mm=np.array([45.0, np.nan], np.float32),
        depth_source=["ground_plane", "monocular"])
    return [
        encode.ImageRecord("a/1.jpg", "file:///data/a/1.jpg", "000000", 640, 480,
                           Camera(k, "sidecar", np.array([0.1, -0.01, 0, 0, 0], np.float32), ext), None, pred),
        encode.ImageRecord("a/2.jpg", "file:///data/a/2.jpg", "000000", 640, 480,
                           Camera(k, "default_fov"), None, encode.Prediction.empty(33)),
        encode.ImageRecord("a/3.jpg", "file:///data/a/3.jpg", "000000", error="truncated: image file is truncated"),
    ], world, ext


def test_round_trip_through_parquet(tmp_path):
    records, world, ext = _records()
    table = encode.to_table(records)
    md = schema.file_metadata({"id": "m", "sha256": "ab"}, {"name": "all", "joint_names": ["j"] * 33,
                                                         "edges": [[0, 1]]}, {"num_aug": 1})
    pq.write_table(table.replace_schema_metadata(md), tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.schema.equals(schema.arrow_schema(), check_metadata=False)
    rows = back.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert rows[2]["error"].startswith("truncated") and rows[2]["people"] == [] and rows[2]["width"] is None
    assert rows[0]["num_people"] == 2 and rows[1]["num_people"] == 0
    p = rows[0]["people"][0]
    np.testing.assert_allclose(p["joints3d_world"], world[0], rtol=1e-6)
    # camera frame = extrinsics applied to the world frame
    expected_cam = world[0] @ ext[:3, :3].T + ext[:3, 3]
    np.testing.assert_allclose(p["joints3d_cam"], expected_cam, rtol=1e-5, atol=1e-3)
    assert rows[1]["people"] == [] and rows[1]["extrinsics"] is None
    np.testing.assert_allclose(np.reshape(rows[0]["extrinsics"], (4, 4)), ext)
    assert p["box"] == [10.0, 20.0, 100.0, 200.0] and abs(p["score"] - 0.9) < 1e-6
    meta = schema.read_metadata(back.schema)
    assert meta["schema_version"] == schema.version() == "1.5"
    # schema 1.3: tracks and per-frame values are null outside videos
    assert p["track_id"] is None and p["joints3d_cam_raw"] is None and p["joints2d_raw"] is None
    # schema 1.2: depth uncertainty and where the depth came from (NaN is stored as null)
    assert p["depth_sigma_mm"] == 45.0 and p["depth_source"] == "ground_plane"
    assert rows[0]["people"][1]["depth_sigma_mm"] is None and rows[0]["people"][1]["depth_source"] == "monocular"
    assert meta["model"]["sha256"] == "ab" and meta["settings"]["num_aug"] == 1
    assert len(meta["skeleton"]["joint_names"]) == 33
    # pandas reads the nested columns without annotator
    df = back.to_pandas()
    assert df.loc[0, "people"][1]["pose_score"] == np.float32(0.5)


def test_only_plain_arrow_types():
    def walk(t):
        assert not isinstance(t, pa.ExtensionType), t
        if pa.types.is_list(t):
            walk(t.value_type)
        elif pa.types.is_struct(t):
            for f in t:
                walk(f.type)
        else:
            assert t in (pa.string(), pa.int32(), pa.int64(), pa.float32()), t
    for field in schema.arrow_schema():
        walk(field.type)


def test_schema_doc_is_generated_from_the_json():
    assert (REPO_SCHEMA_DIR / "README.md").read_text() == schema.markdown()


def test_schema_doc_lists_every_field():
    doc = (REPO_SCHEMA_DIR / "README.md").read_text()
    definition = json.loads((REPO_SCHEMA_DIR / "pose_labels_v1.json").read_text())
    for f in definition["fields"]:
        assert f"`{f['name']}`" in doc
    for f in definition["fields"][-1]["type"]["list"]["struct"]:
        assert f"`people[].{f['name']}`" in doc
