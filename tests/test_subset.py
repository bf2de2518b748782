"""``annotator filter`` on a real output: keeps exactly the people that pass, in the job's layout
(parts with the same shard ids, commit records, manifest), with the file metadata kept."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotator.labels import quality, schema
from annotator.outputs import dataset
from annotator.outputs import subset as filter_mod
from annotator.pipeline.layout import Output
from tests.helpers.jobs import annotator
from tests.helpers.shared_output import shared_output, without_quality

pytestmark = pytest.mark.slow  # runs a job


@pytest.fixture(scope="module")
def labels(tmp_path_factory, samples_dir, default_model_path) -> Path:
    return shared_output(tmp_path_factory, samples_dir)


@pytest.fixture(scope="module")
def labels_q(labels) -> Path:
    """The job's own output: its people carry the quality the pipeline computed."""
    return labels


@pytest.fixture(scope="module")
def labels_v10(labels, tmp_path_factory) -> Path:
    return without_quality(labels, tmp_path_factory.mktemp("v10") / "labels_v10")


def people(out: Path) -> list[tuple[str, dict]]:
    return [(r["image_id"], p) for r in dataset.read_table(str(out)).to_pylist() for p in r["people"]]


def test_min_quality_keeps_exactly_the_people_that_pass(labels_q, tmp_path):
    before = people(labels_q)
    values = sorted(p["quality"] for _, p in before)
    cut = values[len(values) // 2]
    dest = tmp_path / "kept"
    proc = annotator("filter", str(labels_q), str(dest), "--min-quality", str(cut))
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = people(dest)
    want = sorted((i, p["quality"]) for i, p in before if p["quality"] >= cut)
    assert sorted((i, p["quality"]) for i, p in after) == want
    assert 0 < len(after) < len(before)
    # the people that stay are unchanged, joints included
    by_id = {(i, p["quality"]): p for i, p in before}
    for i, p in after:
        assert p == by_id[(i, p["quality"])]
    table = dataset.read_table(str(dest))
    assert table.column("num_people").to_pylist() == [len(x) for x in table.column("people").to_pylist()]
    assert set(table.column("status").to_pylist()) == {"ok"}  # error rows dropped by default
    assert f"people:  {len(before)} -> {len(after)}" in proc.stdout


def test_layout_and_metadata_are_the_jobs(labels_q, tmp_path):
    dest = tmp_path / "kept"
    filter_mod.filter_output(str(labels_q), str(dest), filter_mod.FilterConfig(min_quality=0.0, keep_errors=True))
    src_parts = Output(str(labels_q)).manifest()["parts"]
    manifest = Output(str(dest)).manifest()
    assert manifest["parts"] == src_parts
    assert manifest["rows"] == dataset.read_table(str(dest)).num_rows == dataset.read_table(str(labels_q)).num_rows
    for part in src_parts:
        record = json.loads((dest / "_commits" / (Path(part).stem + ".json")).read_text())
        assert record["rows"] == pq.read_metadata(dest / part).num_rows
        src_meta = schema.read_metadata(pq.read_schema(labels_q / part))
        meta = Output(str(dest)).part_metadata({"part": part})
        for key in ("model", "skeleton", "settings", "schema_version"):
            assert meta[key] == src_meta[key]
        assert meta["filter"]["min_quality"] == 0.0 and meta["filter"]["quality_source"] == "stored"
    assert pq.read_schema(dest / src_parts[0]).equals(pq.read_schema(labels_q / src_parts[0]), check_metadata=False)
    record = json.loads((dest / "_filter.json").read_text())
    assert record["people_out"] == record["people_in"] == len(people(labels_q))
    assert "A filtered copy of" in (dest / "README.md").read_text()  # its own dataset card


def test_min_score_and_emptied_rows(labels, tmp_path):
    before = people(labels)
    scores = sorted(p["score"] for _, p in before)
    cut = scores[-1]  # only the best-scored person passes
    dest = tmp_path / "s"
    rec = filter_mod.filter_output(str(labels), str(dest), filter_mod.FilterConfig(min_score=cut))
    assert [p["score"] for _, p in people(dest)] == [cut]
    assert dataset.read_table(str(dest)).num_rows == 1  # rows that lost all people are gone
    assert rec["rows_emptied"] == len(before) - 1 and rec["error_rows_dropped"] == 2
    keep = tmp_path / "s_keep"
    filter_mod.filter_output(str(labels), str(keep), filter_mod.FilterConfig(min_score=cut, keep_emptied=True,
                                                                              keep_errors=True))
    t = dataset.read_table(str(keep))
    assert t.num_rows == dataset.read_table(str(labels)).num_rows
    assert sorted(t.column("num_people").to_pylist()) == [0, 0, 0, 0, 1]


def test_min_quality_without_stored_quality_computes_it(labels_v10, tmp_path):
    labels = labels_v10
    meta = Output(str(labels)).metadata()
    names = meta["skeleton"]["joint_names"]
    rows = dataset.read_table(str(labels)).to_pylist()
    assert all("quality" not in p for r in rows for p in r["people"])
    computed = sorted(quality.score_stored_person(p, names, (r["width"], r["height"]))
                      for r in rows for p in r["people"])
    cut = computed[len(computed) // 2]
    rec = filter_mod.filter_output(str(labels), str(tmp_path / "c"), filter_mod.FilterConfig(min_quality=cut))
    assert rec["quality_source"] == "computed"
    assert rec["people_out"] == sum(v >= cut for v in computed) == len(people(tmp_path / "c"))


def test_refuses_to_overwrite_and_needs_a_threshold(labels, tmp_path):
    dest = tmp_path / "d"
    assert annotator("filter", str(labels), str(dest), "--min-score", "0").returncode == 0
    proc = annotator("filter", str(labels), str(dest), "--min-score", "0.5")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    proc = annotator("filter", str(labels), str(dest), "--min-score", "0.99", "--overwrite")
    assert proc.returncode == 0 and len(people(dest)) == 0
    proc = annotator("filter", str(labels), str(tmp_path / "e"))
    assert proc.returncode == 2 and "--min-quality" in proc.stderr
