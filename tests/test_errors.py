"""Error text as rows, shards and rounds carry it, and its reason code."""

from __future__ import annotations

from annotator.pipeline import errors


def test_error_text_and_reason():
    assert errors.text("bad_camera", ValueError("no K\nsecond line")) == "bad_camera: ValueError: no K"
    assert errors.text("timeout", "x" * 400) == "timeout: " + "x" * 300
    assert errors.text("empty_shard", "") == "empty_shard: empty_shard"
    assert errors.reason("truncated: image file is truncated") == "truncated"
    assert errors.reason(None) == "unknown"
