"""Error text as rows, shards and rounds carry it, and its reason code."""

from __future__ import annotations

from annotator.pipeline import errors


def test_error_text_and_reason():
    assert errors.text("bad_camera", ValueError("no K\nsecond line")) == "bad_camera: ValueError: no K"
    assert errors.text("timeout", "x" * 400) == "timeout: " + "x" * 300
    assert errors.text("empty_shard", "") == "empty_shard: empty_shard"
    assert errors.reason("truncated: image file is truncated") == "truncated"
    assert errors.reason(None) == "unknown"


def test_a_heading_first_line_gets_its_cause():
    """TensorFlow's op errors start with a heading; the row must say what failed."""
    tf_error = ("Graph execution error:\n\nDetected at node Assert/Assert defined at (most recent call last):\n"
                "<stack traces unavailable>\nassertion failed: [tiny model fails: images]\n"
                "\t [[{{node Assert/Assert}}]] [Op:__inference_restored_function_body_776]")
    assert errors.describe(tf_error) == "Graph execution error: assertion failed: [tiny model fails: images]"
    assert errors.describe("OSError: cannot read\nmore detail") == "OSError: cannot read"  # a real first line stays
