"""Run counters: the steady rate is each actor's rows after its first batch over the time after it,
summed over actors, whatever order and grouping the rows reach the driver in."""

from __future__ import annotations

import pyarrow as pa
import pytest

from annotator.pipeline.progress import RunStats, inference_counts


def _rows(actor: str, done_at: float, n: int) -> pa.Table:
    return pa.table({"num_people": [1] * n, "status": ["ok"] * n, "error": pa.array([None] * n, pa.string()),
                     "_actor": [actor] * n, "_done_at": [done_at] * n})


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
                     "actors": {"n:1": {"images": 2, "gpu": "0", "model_loads": 1, "load_ids": ["L1"]}}}, 0.1,
                    repaired=False)
    stats.add_actors({"n:1": {"gpu": "0", "model_load": "L1", "load_seconds": 9.5, "warmup_seconds": 2.0},
                      "n:2": {"gpu": "1", "model_load": "L2", "load_seconds": 9.9, "warmup_seconds": 2.1}})
    actors = stats.summary()["actors"]
    # the same load seen in its rows and at check-in is one load
    assert actors["n:1"] == {"images": 2, "gpu": "0", "model_loads": 1, "load_seconds": 9.5, "warmup_seconds": 2.0}
    assert actors["n:2"]["images"] == 0 and actors["n:2"]["gpu"] == "1" and actors["n:2"]["model_loads"] == 1


def test_an_actor_that_loaded_its_model_twice_shows_two_loads():
    """Counted from the load ids on the rows (no process-global counter): a second load in the same
    process (a new ``InferenceStage``) has a new id."""
    stats = RunStats()
    for load in ("L1", "L2", "L2"):
        stats.add_shard({"rows": 1, "rows_ok": 1, "rows_error": 0, "people": 0, "errors_by_reason": {},
                         "actors": {"n:1": {"images": 1, "gpu": "", "model_loads": 1, "load_ids": [load]}}}, 0.1,
                        repaired=False)
    assert stats.summary()["actors"]["n:1"] == {"images": 3, "gpu": "", "model_loads": 2}


def test_inference_counts_are_the_images_that_reached_the_model_and_those_it_failed_on():
    """The error budget's input: decode errors never reached the model, a failed shard's rows (a
    timeout, a bug) are not committed; both stay out of the rate."""
    t = pa.table({"status": ["ok", "error", "error", "error", "ok"],
                  "error": [None, "inference_error: InvalidArgumentError: x", "not_an_image: cannot identify",
                            "inference_error: y", None],
                  "_fail": ["", "", "", "timeout: inference exceeded 1 s", ""]})
    assert inference_counts(t) == (3, 1)
    stats = RunStats()
    stats.add_processed(t.append_column("num_people", pa.array([1, 0, 0, 0, 2])))
    assert (stats.inferred, stats.inference_errors) == (3, 1)
