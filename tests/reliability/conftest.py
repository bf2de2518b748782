"""Reliability fixtures: the tiny official-API model (and a busy one whose calls take ~1 s), the
test-sized input, and the single-node reference run every scenario is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.common import make_photos, rows_by_id, tiny_model_folder

# matrix products per model call that make one call of the busy model last about 0.3-1 s here
BUSY_WORK = 20_000


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return tiny_model_folder(tmp_path_factory.getbasetemp() / "tiny_model")


@pytest.fixture(scope="session")
def busy_model(tmp_path_factory) -> str:
    """Same labels as ``tiny_model``; each call first spends ~1 s of CPU (an actor is then killed
    mid-batch, not between batches)."""
    return tiny_model_folder(tmp_path_factory.getbasetemp() / "busy_model", BUSY_WORK)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "reliability_photos"
    if not folder.exists():
        make_photos(folder)
    return folder


@pytest.fixture(scope="session")
def reference(ray_cluster, tiny_model, photos, tmp_path_factory) -> dict[str, dict]:
    """The rows of an uninterrupted run on one node (the session's local Ray), by image id."""
    from annotator.runners import ray_data
    from tests.helpers.jobs import job_spec

    out = tmp_path_factory.getbasetemp() / "reliability_reference"
    if not (out / "_summary.json").exists():
        summary = ray_data.run(job_spec(str(photos), str(out), model=tiny_model, shard_size=2))
        assert summary["shards_failed"] == 0 and summary["images"] == 16
    rows = rows_by_id(str(out))
    assert len(rows) == 16 and sum(r["status"] == "ok" for r in rows.values()) == 15
    return rows
