"""``annotator diff`` on a synthetic pair with known answers: B is A with every person's 3D joints
moved 30 mm along x and quality raised by 0.05, one person dropped in one image, one image only in
A. No model: both outputs are written by the real sink (``tests/helpers/synthetic.py``)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pytest

from annotator.cli import main
from annotator.labels import schema
from annotator.outputs import diff
from annotator.pipeline import sink
from tests.helpers.synthetic import write_output


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("diff")
    rows = write_output(str(base / "a"), str(base / "images"))
    b_rows = {}
    for image_id, row in rows.items():
        if image_id == "s1/img2.jpg":  # only in A
            continue
        row = copy.deepcopy(row)
        for p in row["people"]:
            p["joints3d_cam"] = (np.asarray(p["joints3d_cam"]) + [30.0, 0.0, 0.0]).tolist()
            p["quality"] = p["quality"] + 0.05
        if image_id == "s0/img0.jpg":  # two people in A, one in B
            row["people"], row["num_people"] = row["people"][:1], 1
        b_rows[image_id] = row
    out = sink.DatasetSink(str(base / "b"), fingerprint="synthetic-b")
    out.makedirs()
    records = {}
    for shard in sorted({r["shard"] for r in b_rows.values()}):
        table = pa.Table.from_pylist([r for r in b_rows.values() if r["shard"] == shard], schema=schema.arrow_schema())
        records[shard] = out.write_shard(shard, table)
    out.write_manifest(records, final=True)
    return str(base / "a"), str(base / "b"), rows


def test_known_displacement_people_and_quality(pair):
    a, b, rows = pair
    result = diff.compare(a, b)
    s = result["summary"]
    assert s["images_compared"] == len(rows) - 1 and s["only_in_a"] == 1 and s["only_in_b"] == 0
    assert s["images_people_changed"] == 1
    assert s["mean_displacement_mm"] == pytest.approx(30.0) and s["median_displacement_mm"] == pytest.approx(30.0)
    assert s["mean_quality_shift"] == pytest.approx(0.05)
    by_id = {d["image_id"]: d for d in result["images"]}
    assert (by_id["s0/img0.jpg"]["people_a"], by_id["s0/img0.jpg"]["people_b"], by_id["s0/img0.jpg"]["matched"]) \
        == (2, 1, 1)
    assert by_id["s0/broken.jpg"]["mean_displacement_mm"] is None  # an error row: nothing to compare
    # the same output against itself: nothing moved
    same = diff.compare(a, a)["summary"]
    assert same["mean_displacement_mm"] == 0.0 and same["images_people_changed"] == 0 and same["only_in_a"] == 0


def test_cli_prints_the_table_and_json(pair, capsys):
    a, b, _ = pair
    assert main(["diff", a, b, "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "mean displacement 30.0 mm" in text and "quality:  mean shift +0.050" in text
    assert "(1 only in A, 0 only in B)" in text and len([ln for ln in text.splitlines() if ln.startswith("s")]) == 3
    assert main(["diff", a, b, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["images_people_changed"] == 1 and len(doc["images"]) == doc["summary"]["images_compared"]
