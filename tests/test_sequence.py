"""The temporal step of video shards without the model: synthetic people encoded as label rows, a
video cut into 3 shards with overlap, committed through ``pipeline.commit.commit_shard`` into a real
output. Track ids stitch across shards, the parts are byte-identical on a rerun and after a stop
and resume, bone lengths stay constant per track, and a shard waits for the one before it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotator.labels import schema
from annotator.labels.camera_codec import Camera
from annotator.pipeline import encode, sequence, stages
from annotator.pipeline.commit import commit_shard
from annotator.pipeline.sink import DatasetSink
from annotator.temporal import consistency
from tests.helpers import people

N_FRAMES, SHARD, OVERLAP = 30, 10, 4
HIPS = [people.NAMES.index("left_hip"), people.NAMES.index("right_hip")]
EXT = np.array([[1.0, 0, 0, 100], [0, 0, -1, 1500], [0, 1, 0, 2000], [0, 0, 0, 1]])  # world (z up) -> camera


def _rows(frames: range, shard: str, seed: int = 0, video: str = "/data/walk.mp4") -> pa.Table:
    """Label rows of frames of one video: a person walking right, another standing, with
    network-like noise (joints, depth-and-size), and frame 17 unreadable."""
    out = []
    for f in frames:
        rng = np.random.default_rng(seed * 1000 + f)  # the same frame has the same "prediction" in any shard
        cam = Camera(people.K, "calibration", np.zeros(5), EXT)
        uri = f"{video}#frame={f}"
        if f == 17:
            out.append(encode.ImageRecord(f"walk.mp4/{f:06d}", uri, shard, error="decode_error: broken frame"))
            continue
        cams, boxes, j2 = [], [], []
        for centre in (np.array([-900.0 + 40 * f, 0, 4000]), np.array([700.0, 50, 5500])):
            x = people.pose_at(centre, 0.2 * f) * (1 + rng.normal(0, 0.04)) + rng.normal(0, 15, (33, 3))
            cams.append(x)
            p2 = people.project(x)
            j2.append(p2)
            boxes.append(people.box_of(p2))
        cams = np.array(cams)
        world = (cams - EXT[:3, 3]) @ EXT[:3, :3]
        pred = encode.Prediction(np.array(boxes, np.float32), np.array(j2, np.float32), world.astype(np.float32),
                                 joint_confidences=np.full((2, 33), 0.9, np.float32))
        out.append(encode.ImageRecord(f"walk.mp4/{f:06d}", uri, shard, 1920, 1080, cam, prediction=pred))
    table = encode.to_table(out)
    n = table.num_rows
    extras = {"_shard_rows": pa.array(np.full(n, n, np.int64)), "_fail": pa.array([""] * n),
              "_read_s": pa.array(np.zeros(n)), "_read_retries": pa.array(np.zeros(n, np.int64)),
              "_decode_s": pa.array(np.zeros(n)), "_infer_s": pa.array(np.zeros(n)),
              "_actor": pa.array(["a"] * n), "_gpu": pa.array([""] * n), "_model_load": pa.array(["load1"] * n),
              "_decode_pid": pa.array(np.ones(n, np.int64)), "_done_at": pa.array(np.zeros(n)),
              "_stop": pa.array([""] * n), "_up_hint": pa.nulls(n, pa.string())}
    for name in stages.EXTRA_COLUMNS:
        table = table.append_column(name, extras[name])
    return table


def _plan_rows() -> list[dict]:
    return [{"shard": f"{i:06d}", "kind": "video", "source": "/data/walk.mp4", "start": s,
             "stop": min(s + SHARD + OVERLAP, N_FRAMES), "every": 1} for i, s in enumerate(range(0, N_FRAMES, SHARD))]


def _sink(path) -> DatasetSink:
    meta = schema.file_metadata({"name": "synthetic"}, {"name": "all", **people.SKELETON}, {"num_aug": 1})
    sink = DatasetSink(str(path), file_metadata=meta, fingerprint="f", attempt="a")
    sink.makedirs()
    return sink


def _commit(sink, shards: list[str], consistency_on: bool = True, video: str = "/data/walk.mp4") -> dict[str, dict]:
    seqs = sequence.plan_sequences(_plan_rows(), sequence.TemporalSettings(consistency=consistency_on))
    out = {}
    for s in shards:
        seq = seqs[s]
        stop = _plan_rows()[int(s)]["stop"]
        out[s], _ = commit_shard(sink, s, [_rows(range(seq.start, stop), s, video=video)], None, None, 1, seq)
    return out


def _read(path) -> list[dict]:
    rows = []
    for p in sorted((path / "parts").glob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def test_plan_sequences_commit_ranges_and_predecessors():
    seqs = sequence.plan_sequences(_plan_rows(), sequence.TemporalSettings())
    assert [(q.start, q.stop, q.previous) for q in seqs.values()] == [(0, 10, None), (10, 20, "000000"),
                                                                      (20, 30, "000001")]


def test_three_shards_stitch_tracks_and_are_identical_on_rerun_and_resume(tmp_path):
    one = _commit(_sink(tmp_path / "one"), ["000000", "000001", "000002"])
    rows = _read(tmp_path / "one")
    frames = [sequence.frame_of(r["source_uri"]) for r in rows]
    assert sorted(frames) == list(range(N_FRAMES))  # the overlap is committed once, by its own shard
    # who each person is, from its per-frame input (hips' midpoint) and where _rows put the two people
    # in that frame; measured: within 538 mm of its own (the 4 % depth-and-size jitter at 5.5 m), at
    # least 1306 mm from the other's
    tracks: dict[str, list[tuple[int, int]]] = {"walker": [], "standing": []}
    for r, f in zip(rows, frames, strict=True):
        for p in r["people"]:
            hips = np.asarray(p["joints3d_cam_raw"])[HIPS].mean(0)
            near = {"walker": np.linalg.norm(hips - [-900.0 + 40 * f, 0, 4000]),
                    "standing": np.linalg.norm(hips - [700.0, 50, 5500])}
            who = min(near, key=near.get)
            assert near[who] < 700 and max(near.values()) > 1100, (f, near)
            tracks[who].append((f, p["track_id"]))
    every = [f for f in range(N_FRAMES) if f != 17]  # frame 17 is unreadable
    for who, seen in tracks.items():
        assert sorted(f for f, _ in seen) == every, who  # once in every readable frame
    walker, standing = ({t for _, t in seen} for seen in tracks.values())
    # one track per person, across all three shards; both born at frame 0
    assert len(walker) == 1 and len(standing) == 1 and walker | standing == {0, 1}
    # a rerun into another output: the same bytes
    two = _commit(_sink(tmp_path / "two"), ["000000", "000001", "000002"])
    assert [r["sha256"] for r in one.values()] == [r["sha256"] for r in two.values()]
    # stopped after the first shard, resumed by another process state: the same bytes again
    sink = _sink(tmp_path / "resumed")
    first = _commit(sink, ["000000"])
    rest = _commit(_sink(tmp_path / "resumed"), ["000001", "000002"])
    assert [r["sha256"] for r in {**first, **rest}.values()] == [r["sha256"] for r in one.values()]


def test_bone_lengths_per_track_are_constant_across_shards(tmp_path):
    _commit(_sink(tmp_path), ["000000", "000001", "000002"])
    skel = consistency.SkeletonInfo.of(people.NAMES, people.EDGES)
    by_track: dict[int, list] = {}
    for r in _read(tmp_path):
        for p in r["people"]:
            pair = (np.array(p["joints3d_cam"]), np.array(p["joints3d_cam_raw"]))
            by_track.setdefault(p["track_id"], []).append(pair)
    for poses in by_track.values():
        final = consistency.bone_lengths(np.stack([a for a, _ in poses]), skel.tree)
        raw = consistency.bone_lengths(np.stack([b for _, b in poses]), skel.tree)
        spread = lambda x: ((x.max(0) - x.min(0)) / np.median(x, 0)).max()  # noqa: E731
        assert spread(raw) > 0.1 and spread(final) < 0.03


def test_joints2d_is_the_projection_and_world_the_inverse_extrinsics(tmp_path):
    _commit(_sink(tmp_path), ["000000", "000001"])
    for r in _read(tmp_path):
        for p in r["people"]:
            cam = np.array(p["joints3d_cam"])
            np.testing.assert_allclose(p["joints2d"], people.project(cam), atol=0.05)
            np.testing.assert_allclose(np.array(p["joints3d_world"]) @ EXT[:3, :3].T + EXT[:3, 3], cam, atol=0.05)
            assert not np.allclose(p["joints3d_cam"], p["joints3d_cam_raw"])


def test_without_consistency_only_track_ids(tmp_path):
    _commit(_sink(tmp_path), ["000000", "000001"], consistency_on=False)
    rows = _read(tmp_path)
    assert all(p["track_id"] in (0, 1) and p["joints3d_cam_raw"] is None for r in rows for p in r["people"])


def test_commit_order_waits_for_the_shard_before():
    seqs = sequence.plan_sequences(_plan_rows(), sequence.TemporalSettings())
    order = sequence.CommitOrder(seqs, set(), {"000000", "000001", "000002"})
    assert order.can_commit("000000") and not order.can_commit("000001") and not order.can_commit("000002")
    order.done("000000")
    assert order.can_commit("000001") and not order.can_commit("000002")
    order.fail("000001")
    assert order.blocked_by_failure("000002") and not order.can_commit("000002")
    # a predecessor committed by an earlier run (not in this round's work) does not block
    assert sequence.CommitOrder(seqs, set(), {"000002"}).can_commit("000002")


def test_report_shows_track_lengths_and_a_strip_of_one_track(tmp_path):
    import av

    from annotator.outputs import report

    video = tmp_path / "walk.mp4"
    with av.open(str(video), "w") as dst:
        stream = dst.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i in range(N_FRAMES):
            img = np.full((1080, 1920, 3), 40 + 5 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    sink = _sink(tmp_path / "out")
    records = _commit(sink, ["000000", "000001", "000002"], video=str(video))
    sink.write_manifest(records, final=True, shards_total=3)
    page = report.build_html(str(tmp_path / "out"))
    assert "<h2>Tracks</h2>" in page
    assert "<td>tracks</td>\n<td class=\"num\">2</td>" in page.replace("</td><td", "</td>\n<td")
    assert 'alt="track lengths" src="data:image/png;base64,' in page
    assert 'alt="frames of track 0" style="max-width:100%" src="data:image/jpeg;base64,' in page
    assert "frames not readable" not in page
