"""``memory://`` in and out (fsspec's in-process filesystem, e.g. for notebooks and tests of code
that embeds annotator): the Ray runner reads it on the driver and hands the bytes to Ray, as no
worker can see this process's memory; the Beam DirectRunner reads it where it runs."""

from __future__ import annotations

import fsspec
import pytest

from annotator import sink
from annotator.runners import beam, ray_data

from .test_pipeline_fixtures import by_id, photo_bytes, test_spec

pytestmark = pytest.mark.slow


def test_memory_in_and_out_with_both_runners(ray_cluster, default_model_path):
    fs = fsspec.filesystem("memory")
    for i in range(5):
        fs.pipe_file(f"/annotator-test/photos/img{i:03d}.jpg", photo_bytes(i))
    fs.pipe_file("/annotator-test/photos/broken.jpg", photo_bytes(5)[:300])  # truncated JPEG
    try:
        summaries = {}
        for name, runner in (("ray", ray_data), ("beam", beam)):
            out = f"memory://annotator-test/labels-{name}"
            summaries[name] = runner.run(test_spec("memory://annotator-test/photos", out, runner=name))
            rows = by_id(sink.read_dataset(out))
            assert sorted(rows) == sorted(["broken.jpg", *(f"img{i:03d}.jpg" for i in range(5))])
            assert rows["broken.jpg"]["status"] == "error"
            assert all(rows[f"img{i:03d}.jpg"]["status"] == "ok" for i in range(5))
            assert fs.exists(f"/annotator-test/labels-{name}/_manifest.json")
        for key in ("images", "images_ok", "images_error", "people", "shards_committed", "errors_by_reason"):
            assert summaries["ray"][key] == summaries["beam"][key], key
        assert summaries["ray"]["images_error"] == 1
    finally:
        fs.rm("/annotator-test", recursive=True)
