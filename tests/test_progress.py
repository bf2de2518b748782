"""Run counters: the steady rate is each actor's rows after its first batch over the time after it,
summed over actors, whatever order and grouping the rows reach the driver in."""

from __future__ import annotations

import pyarrow as pa
import pytest

from annotator.pipeline.progress import RunStats


def _rows(actor: str, done_at: float, n: int) -> pa.Table:
    return pa.table({"num_people": [1] * n, "status": ["ok"] * n, "_actor": [actor] * n,
                     "_done_at": [done_at] * n})


def test_steady_rate_sums_actors_and_excludes_each_first_batch():
    stats = RunStats()
    assert stats.steady() == {"seconds_to_first_rows": None, "steady_images_per_second": None}
    # actor a: batches of 8 done at t=100 (warm-up), 102, 104 -> 16 rows in 4 s = 4/s; they arrive
    # late and out of order, two batches in one table
    stats.add_processed(pa.concat_tables([_rows("a", 104.0, 8), _rows("a", 102.0, 8)]))
    stats.add_processed(_rows("a", 100.0, 8))
    assert stats.steady()["seconds_to_first_rows"] >= 0
    assert stats.steady()["steady_images_per_second"] == pytest.approx(4.0)
    stats.add_processed(_rows("b", 50.0, 4))  # actor b: one batch only: no rate of its own yet
    assert stats.steady()["steady_images_per_second"] == pytest.approx(4.0)
    stats.add_processed(_rows("b", 52.0, 3))  # 3 rows in 2 s
    assert stats.steady()["steady_images_per_second"] == pytest.approx(5.5)
    assert stats.summary()["steady_images_per_second"] == pytest.approx(5.5)
    assert stats.processed == 31


def test_actors_that_checked_in_show_even_without_rows():
    stats = RunStats()
    stats.add_shard({"rows": 2, "rows_ok": 2, "rows_error": 0, "people": 1, "errors_by_reason": {},
                     "actors": {"n:1": {"images": 2, "gpu": "0", "model_loads": 1}}}, 0.1, repaired=False)
    stats.add_actors({"n:1": {"gpu": "0", "model_loads": 1, "load_seconds": 9.5, "warmup_seconds": 2.0},
                      "n:2": {"gpu": "1", "model_loads": 1, "load_seconds": 9.9, "warmup_seconds": 2.1}})
    actors = stats.summary()["actors"]
    assert actors["n:1"] == {"images": 2, "gpu": "0", "model_loads": 1, "load_seconds": 9.5, "warmup_seconds": 2.0}
    assert actors["n:2"]["images"] == 0 and actors["n:2"]["gpu"] == "1" and actors["n:2"]["model_loads"] == 1
