"""The error budget's rules on their own (``pipeline.budget``); whole jobs with a model that fails
on every image, or on one image in twenty, are in tests/reliability/test_error_budget.py."""

from __future__ import annotations

import pytest

from annotator.pipeline.budget import MARK, ErrorBudget, ErrorBudgetExceeded, FirstBatches, stop_message


def test_rate_is_judged_from_min_images_on_and_stops_only_above_the_budget():
    budget = ErrorBudget(max_error_rate=0.05, min_images=100)
    budget.check_rate(99, 99)  # too few images to judge
    budget.check_rate(100, 5)  # exactly at the budget: one image in twenty goes on
    with pytest.raises(ErrorBudgetExceeded, match=r"6 of 100 images \(6.0%\).*--max-error-rate 0.05") as e:
        budget.check_rate(100, 6)
    assert str(e.value).startswith(MARK)


def test_first_batches_trip_only_when_each_of_the_first_n_failed_on_every_image():
    first = FirstBatches(3)
    assert not first.doubtful
    assert not first.add(4, ["inference_error: a"] * 4)
    assert first.doubtful  # the stage holds these rows back as a shard failure
    assert not first.add(4, ["inference_error: b"] * 4)
    assert first.add(2, ["inference_error: c"] * 2)
    assert first.first_error == "inference_error: a"

    partial = FirstBatches(3)
    assert not partial.add(4, ["inference_error: a"] * 4)
    assert not partial.add(4, ["inference_error: a"] * 3)  # one image worked: the model runs here
    assert not partial.doubtful  # from now on a failed image is an error row
    assert not partial.add(4, ["inference_error: a"] * 4)
    assert not partial.add(4, ["inference_error: a"] * 4)  # only the first three batches count

    empty = FirstBatches(1)
    assert not empty.add(0, [])  # a batch of decode errors only never reached the model
    assert empty.add(1, ["inference_error: a"])


def test_stop_message_is_one_line_even_inside_an_engines_wrapped_error():
    wrapped = f"RuntimeError: Traceback (most recent call last):\n  ...\nErrorBudgetExceeded: {MARK}the model's " \
              f"warm-up call failed on n:1: InvalidArgumentError: broken\n  more"
    assert stop_message(wrapped) == f"{MARK}the model's warm-up call failed on n:1: InvalidArgumentError: broken"


def test_a_retry_errors_run_has_no_budget_but_programming_errors():
    """Its rows all failed before and may all fail again: neither rule may call that a broken model."""
    budget = ErrorBudget.for_run(0.05, retry_errors=True)
    budget.check_rate(1000, 1000)
    off = FirstBatches(budget.first_batches)
    assert not any(off.add(4, ["inference_error: a"] * 4) for _ in range(5)) and not off.doubtful
    assert ErrorBudget.for_run(0.05, retry_errors=False) == ErrorBudget(max_error_rate=0.05)
