"""The snippets of docs/consumers.md, run as written (each in a fresh interpreter, so no annotator
import leaks in) on a real ``annotator run`` output: pandas, polars, DuckDB (globs of ``parts/``),
Hugging Face ``datasets`` (the folder itself, offline, through its dataset card), Ray Data (with its
training loader) and ``annotator.dataset`` all read the same rows and the same nested joint value
that pyarrow reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotator.outputs import dataset
from annotator.pipeline.layout import Output
from tests.helpers.shared_output import shared_output

DOC = Path(__file__).resolve().parent.parent / "docs" / "consumers.md"
IMAGE_ID = "pose2sim_cam01_f030.jpg"


@pytest.fixture(scope="module")
def labels(tmp_path_factory, samples_dir, default_model_path) -> Path:
    return shared_output(tmp_path_factory, samples_dir)


@pytest.fixture(scope="module")
def truth(labels) -> dict:
    table = dataset.read_table(str(labels))
    rows = table.to_pylist()
    row = next(r for r in rows if r["image_id"] == IMAGE_ID)
    return {"rows": table.num_rows, "ok": sum(r["status"] == "ok" for r in rows),
            "value": row["people"][0]["joints3d_cam"][5][2], "row": row,
            "people_per_image": sorted((n, sum(1 for r in rows if r["status"] == "ok" and r["num_people"] == n))
                                       for n in {r["num_people"] for r in rows if r["status"] == "ok"})}


def snippets() -> dict[str, str]:
    """``# consumer: NAME`` code blocks of the doc, each with the shared preamble (first block)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    preamble = blocks[0]
    out = {}
    for block in blocks[1:]:
        m = re.match(r"# consumer: (\S+)\n", block)
        if m:
            out[m.group(1)] = preamble + "\n" + block
    return out


def run_snippet(name: str, out: Path, tmp_path: Path, env: dict | None = None) -> dict:
    code = snippets()[name].replace('out = "labels"', f"out = {str(out)!r}", 1)
    code = code.replace('parts = f"{out}/parts"', f'parts = f"{{out}}/parts"\nimage_id = {IMAGE_ID!r}', 1)
    code += ("\nimport json as _j\nprint('RESULT', _j.dumps({'rows': int(rows), 'value': float(value), "
             "'people': int(globals().get('seen', -1))}))\n")
    env = {"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_doc_has_a_snippet_per_consumer():
    assert set(snippets()) == {"pandas", "polars", "duckdb", "datasets", "ray.data", "annotator.outputs.dataset"}


@pytest.mark.slow  # the shared output: a job
@pytest.mark.parametrize("name", ["pandas", "polars", "duckdb", "datasets"])
def test_consumer_reads_all_rows_and_a_nested_joint_value(name, labels, truth, tmp_path):
    got = run_snippet(name, labels, tmp_path)
    assert got["rows"] == truth["rows"] == 5
    assert got["value"] == pytest.approx(truth["value"], abs=1e-3)
    assert abs(truth["value"]) > 100  # a real depth-bearing coordinate, not a default zero


@pytest.mark.slow  # the shared output: a job; starts a local Ray
def test_ray_data_snippet_and_its_training_loader(labels, truth, tmp_path):
    got = run_snippet("ray.data", labels, tmp_path, env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert got["rows"] == truth["rows"] == 5
    assert got["value"] == pytest.approx(truth["value"], abs=1e-3)
    assert got["people"] > 0  # the loader's epochs yielded one sample per good person


@pytest.mark.slow  # the shared output: a job
def test_datasets_snippet_worked_offline(labels, tmp_path):
    run_snippet("datasets", labels, tmp_path)
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


@pytest.mark.slow  # the shared output: a job
def test_loader_snippet_yields_image_and_labels(labels, truth, tmp_path):
    got = run_snippet("annotator.outputs.dataset", labels, tmp_path)
    assert got["rows"] == truth["ok"] == 3
    assert got["value"] == pytest.approx(truth["value"], abs=1e-3)


@pytest.mark.slow  # the shared output: a job
def test_duckdb_people_per_image(labels, truth):
    import duckdb

    parts = Output(str(labels)).part_uris()
    con = duckdb.connect()
    con.read_parquet(parts).create_view("labels")
    got = con.execute("SELECT len(people), count(*) FROM labels WHERE status = 'ok' GROUP BY 1 ORDER BY 1").fetchall()
    assert [tuple(r) for r in got] == [tuple(r) for r in truth["people_per_image"]]


@pytest.mark.slow  # the shared output: a job
def test_loader_images_labels_and_worker_split(labels, truth):
    ds = dataset.PoseDataset(str(labels))
    assert len(ds) == truth["ok"]
    assert len(dataset.PoseDataset(str(labels), dataset.LoaderConfig(skip_errors=False))) == truth["rows"]
    ids = []
    for image, lab in ds:
        assert image.dtype == np.uint8 and image.shape == (lab["height"], lab["width"], 3)
        k, j = len(lab["scores"]), len(ds.joint_names)
        assert lab["joints3d_cam"].shape == (k, j, 3) and lab["joints2d"].shape == (k, j, 2)
        assert lab["boxes"].shape == (k, 4) and lab["intrinsics"].shape == (3, 3)
        assert np.all((lab["quality"] >= 0) & (lab["quality"] <= 1))  # the job stored each person's quality
        ids.append(lab["image_id"])
    assert IMAGE_ID in ids
    lab = ds.labels(ids.index(IMAGE_ID))
    want = np.asarray(truth["row"]["people"][0]["joints2d"], np.float32)
    np.testing.assert_array_equal(lab["joints2d"][0], want)
    # workers split the rows between them, each row once
    split = [dataset.PoseDataset(str(labels), dataset.LoaderConfig(rank=r, world_size=2)) for r in range(2)]
    got = sorted(s.labels(i)["image_id"] for s in split for i in range(len(s)))
    assert got == sorted(ids) and all(len(s) > 0 for s in split)
    errors = dataset.PoseDataset(str(labels), dataset.LoaderConfig(skip_errors=False))
    pairs = [errors[i] for i in range(len(errors))]
    assert sum(img is None for img, _ in pairs) == truth["rows"] - truth["ok"]
    assert {lab["error"].split(":")[0] for img, lab in pairs if img is None} == {"truncated", "not_an_image"}


@pytest.mark.slow  # the shared output: a job
def test_loader_min_quality_drops_people(labels):
    q = labels  # the job stored each person's quality
    table = dataset.read_table(str(q))
    values = sorted(p["quality"] for r in table.to_pylist() for p in r["people"])
    cut = values[len(values) // 2]
    ds = dataset.PoseDataset(str(q), dataset.LoaderConfig(min_quality=cut))
    kept = [float(v) for i in range(len(ds)) for v in ds.labels(i)["quality"]]
    assert all(v >= cut for v in kept) and len(kept) == sum(v >= cut for v in values)
    assert 0 < len(kept) < len(values)
