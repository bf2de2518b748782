"""Versions of one output (``pipeline.versions``): new settings on an existing output make v2 beside
v1 (both read back), readers default to the latest, ``OUT@vN`` works for status, diff, export and
the report's diff section, and ``annotator versions --remove`` refuses the latest and the only
version unless forced.

Two outputs: a real run of the tiny official-API model, then the same input with other settings
(jobs run in this process under the Beam runner: its workers commit, after checking the output
lock's token in the version folder they write; the runners share every version decision in
``runners/job.py``, and Beam needs no Ray cluster started for this file); and a synthetic pair
written by the real sink (``tests/helpers/synthetic.py``, as ``tests/test_diff.py``): v2 is v1 with
each image's first person only, moved 40 mm in depth, quality -0.1, and one image left out, so the
diff has known answers. No mocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator.cli import main
from annotator.labels import schema
from annotator.outputs import dataset, diff, report, status
from annotator.pipeline import layout, sink, versions
from annotator.pipeline import plan as plan_mod
from annotator.pipeline.layout import Output
from tests.helpers.jobs import job_spec
from tests.helpers.photos import write_photos
from tests.helpers.synthetic import write_output
from tests.reliability.common import rows_by_id, tiny_model_folder


class _Spec:  # what versions.successor reads of a RunSpec
    new_version = append = frozen = retry_errors = False


def _shifted(rows: dict) -> dict:
    """v2: s1/img2.jpg left out, each image's first person only, 40 mm deeper, quality -0.1."""
    def first(row: dict) -> list[dict]:
        return [{**p, "joints3d_cam": (np.asarray(p["joints3d_cam"]) + [0.0, 0.0, 40.0]).tolist(),
                 "quality": p["quality"] - 0.1} for p in row["people"][:1]]
    return {i: {**r, "people": first(r), "num_people": len(first(r))} for i, r in rows.items() if i != "s1/img2.jpg"}


def _two_people(rows: dict) -> int:
    return sum(r["num_people"] > 1 for i, r in rows.items() if i != "s1/img2.jpg")


@pytest.fixture
def synthetic(tmp_path) -> tuple[str, dict]:
    """OUT with v1 (synthetic rows) and v2 (shifted), made through the versions API and the sink."""
    base, images = str(tmp_path / "out"), str(tmp_path / "images")
    rows = write_output(base, images)
    plan = plan_mod.create(plan_mod.PlanOptions(images, shard_size=4), sources_join(base, layout.PLAN))
    v1 = versions.version(base, 1)
    components = {"model_sha256": "cd" * 32, "settings": {"num_aug": 1}, "plan_hash": plan.hash}
    sink.CommitSink(base).write_json(layout.FINGERPRINT, {"fingerprint": "synthetic", "components": components})
    committed = sink.DatasetSink(base).committed()
    assert versions.successor(v1, committed, "synthetic", components, {}, _Spec()) is None  # same settings
    new = {**components, "settings": {"num_aug": 5}}
    v2 = versions.successor(v1, committed, "other", new, {"id": "second"}, _Spec())
    assert (v2.number, v2.ref, v2.uri) == (2, f"{base}@v2", f"{base}/_versions/v2")
    out = sink.DatasetSink(v2.uri, fingerprint="synthetic-b", file_metadata=pq.read_schema(
        Path(base, layout.PARTS, layout.part_name("000000"))).metadata)
    out.makedirs()
    shifted = _shifted(rows)
    records = {}
    for shard in sorted({r["shard"] for r in shifted.values()}):
        table = pa.Table.from_pylist([r for r in shifted.values() if r["shard"] == shard], schema=schema.arrow_schema())
        records[shard] = out.write_shard(shard, table)
    out.write_manifest(records, final=True)
    doc = versions.read(base)
    assert doc["latest"] == 1 and [v["version"] for v in doc["versions"]] == [1, 2]  # v2 not published yet
    assert doc["versions"][1]["reason"] == "settings.num_aug changed" and doc["versions"][1]["parent"] == 1
    assert Output.open(base).uri == base  # readers stay on v1 while v2 is being made
    info = versions.finish(v2, None, {"id": "second"}, new, plan, complete=True)
    assert info == {"number": 2, "parent": 1, "reason": "settings.num_aug changed", "ref": f"{base}@v2",
                    "published": True, "latest": 2}
    return base, rows


def sources_join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def test_split_and_open():
    assert layout.split_version("gs://b/out@v12") == ("gs://b/out", 12)
    assert layout.split_version("gs://b/user@x/out") == ("gs://b/user@x/out", None)
    assert Output("memory://b/out@v3").uri == "memory://b/out/_versions/v3"
    assert Output("memory://b/out@v1").uri == "memory://b/out" and Output("memory://b/out").version is None
    from annotator.pipeline.spec import SpecError, from_dict

    with pytest.raises(SpecError, match="give the output itself"):
        from_dict({"input": "in", "output": "out@v2"})
    with pytest.raises(SpecError, match="new_version labels everything"):
        from_dict({"input": "in", "output": "out", "new_version": True, "append": True})


def test_new_version_with_the_same_settings_stays_unpublished_until_complete(synthetic):
    base, rows = synthetic

    class Forced(_Spec):
        new_version = True
    v2 = versions.version(base, 2)
    committed = sink.DatasetSink(v2.uri).committed()
    same: dict = {}  # v2's folder has no _fingerprint.json (the sink wrote it, not a run): nothing differs
    assert versions.successor(v2, committed, "synthetic-b", same, {"id": "second"}, _Spec()) is None
    v3 = versions.successor(v2, committed, "synthetic-b", same, {"id": "second"}, Forced())
    entry = versions.read(base)["versions"][2]
    assert (v3.number, entry["parent"], entry["reason"], entry["published_at"]) == (3, 2, "--new-version", None)
    assert Output.open(base).uri == v2.uri  # readers stay on v2: v3 holds nothing yet
    assert [v["state"] for v in versions.listing(base)] == ["published", "latest", "building"]


def test_readers_default_to_the_latest_and_take_a_version(synthetic, tmp_path):
    base, rows = synthetic
    assert Output.open(base).uri == f"{base}/_versions/v2"
    latest, first = dataset.read_table(base), dataset.read_table(f"{base}@v1")
    assert latest.num_rows == len(rows) - 1 and first.num_rows == len(rows)
    assert dataset.read_table(f"{base}@v2").num_rows == latest.num_rows
    assert len(dataset.PoseDataset(base)) == len(dataset.PoseDataset(f"{base}@v1")) - 1
    # plain Parquet readers: v1 under OUT/parts (as always), the latest where _versions.json says
    doc = json.loads(Path(base, layout.VERSIONS_FILE).read_text())
    assert doc["latest_parts"] == "_versions/v2/parts"
    assert pq.read_table(Path(base, doc["latest_parts"])).num_rows == latest.num_rows
    assert pq.read_table(Path(base, layout.PARTS)).num_rows == first.num_rows
    with pytest.raises(FileNotFoundError, match="no version v3"):
        Output.open(f"{base}@v3")

    st = status.read(base)
    assert st["version"]["number"] == 2 and st["rows"] == len(rows) - 1
    assert status.read(f"{base}@v1")["rows"] == len(rows)
    assert main(["status", f"{base}@v1"]) == 0
    assert main(["versions", base]) == 0
    listed = versions.listing(base)
    assert [(v["version"], v["state"], v["rows"]) for v in listed] == [(1, "published", len(rows)),
                                                                      (2, "latest", len(rows) - 1)]
    # the card describes the latest; datasets loads it through the card's configs
    assert main(["card", base]) == 0
    card = Path(base, layout.CARD).read_text()
    assert "path: _versions/v2/parts/*.parquet" in card and "## Versions" in card
    assert Path(base, "_versions/v2", layout.CARD).read_text().count("path: parts/*.parquet") == 1
    code = (f"import datasets; ds = datasets.load_dataset({base!r}, split='train'); "
            "print('ROWS', len(ds), len(set(ds['image_id'])))")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ROWS {len(rows) - 1} {len(rows) - 1}" in proc.stdout  # v2's rows, through the card


def test_diff_of_two_versions_gives_known_answers(synthetic, capsys):
    base, rows = synthetic
    result = diff.compare(f"{base}@v1", base)
    s = result["summary"]
    assert s["images_compared"] == len(rows) - 1 and s["only_in_a"] == 1 and s["only_in_b"] == 0
    assert s["images_people_changed"] == _two_people(rows) == 3
    assert s["mean_displacement_mm"] == pytest.approx(40.0) and s["mean_quality_shift"] == pytest.approx(-0.1)
    by_id = {d["image_id"]: d for d in result["images"]}
    assert (by_id["s0/img0.jpg"]["people_a"], by_id["s0/img0.jpg"]["people_b"]) == (2, 1)
    assert by_id["s0/broken.jpg"]["mean_displacement_mm"] is None
    assert main(["diff", f"{base}@v1", f"{base}@v2"]) == 0
    assert "mean displacement 40.0 mm" in capsys.readouterr().out


def test_report_shows_the_diff_with_its_parent(synthetic, tmp_path):
    base, rows = synthetic
    page = report.build_html(base, report.ReportConfig(samples_per_group=1))
    assert f"Changes: {base}@v1 -&gt; {base}@v2" in page
    section = page[page.index("Changes: "):]
    assert "<tr><td>mean displacement (mm)</td><td>40.0</td></tr>" in section
    assert "<tr><td>mean quality shift</td><td>-0.100</td></tr>" in section
    assert section.count('alt="diff histograms" src="data:image/png;base64,') == 1
    assert '<tr><td>s0/img0.jpg</td><td class="num">2</td><td class="num">1</td>' in section
    # v1 has no parent: no section, unless asked; --diff picks any two
    assert "Changes: " not in report.build_html(f"{base}@v1", report.ReportConfig(samples_per_group=1))
    assert report.parse_diff(base, "v2,v1") == (f"{base}@v2", f"{base}@v1")
    out = tmp_path / "r.html"
    assert main(["report", f"{base}@v1", "--out", str(out), "--samples", "1", "--diff", "v2,v1"]) == 0
    assert "<tr><td>mean displacement (mm)</td><td>40.0</td></tr>" in out.read_text()


def test_remove_refuses_latest_and_only_unless_forced(synthetic, capsys):
    base, rows = synthetic
    assert main(["versions", base, "--remove", "v2"]) == 2
    assert "latest version" in capsys.readouterr().err
    assert main(["versions", base, "--remove", "v1"]) == 0
    assert not Path(base, layout.PARTS).exists() and not Path(base, layout.PLAN).exists()
    assert dataset.read_table(base).num_rows == len(rows) - 1  # v2 untouched
    with pytest.raises(FileNotFoundError, match=r"no version v1 \(versions: v2"):
        dataset.read_table(f"{base}@v1")
    assert [v["state"] for v in versions.listing(base)] == ["removed", "latest"]
    assert main(["versions", base, "--remove", "v2"]) == 2
    assert "only version" in capsys.readouterr().err
    assert main(["versions", base, "--remove", "v2", "--force"]) == 0
    assert not Path(base, "_versions/v2").exists()


# ---------------------------------------------------------------------------------------------
# real runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_model_folder(tmp_path_factory.getbasetemp() / "tiny_model")


@pytest.mark.slow
def test_new_settings_make_a_version_and_both_read_back(tiny, tmp_path, caplog):
    from annotator.cli.run import format_summary
    from annotator.pipeline.fingerprint import FingerprintError
    from annotator.runners import beam

    src, out = tmp_path / "in", tmp_path / "out"
    names = write_photos(src, 4)

    def run(**settings):
        flags = {k: settings.pop(k) for k in ("append", "frozen", "new_version") if k in settings}
        return beam.run(job_spec(str(src), str(out), model=tiny, shard_size=2, settings=settings, runner="beam",
                                 **flags))
    first = run()
    assert first["version"] is None and not (out / layout.VERSIONS_FILE).exists()  # one version: as before
    assert "version:" not in format_summary(first)

    caplog.set_level("WARNING", logger="annotator.pipeline.versions")
    second = run(num_aug=2)
    assert "new version v2 (settings.num_aug changed since v1, which is kept)" in caplog.text
    assert "version:  v2 (parent v1: settings.num_aug changed); the latest" in format_summary(second)
    assert second["output"] == f"{out}@v2" and second["images"] == 4
    v1, v2 = rows_by_id(str(out)), rows_by_id(f"{out}@v2")
    assert sorted(v1) == sorted(v2) == sorted(names)
    assert Output(f"{out}@v2").metadata()["settings"]["num_aug"] == 2
    assert Output(str(out)).metadata()["settings"]["num_aug"] == 1
    assert sorted(dataset.read_table(str(out)).column("image_id").to_pylist()) == sorted(names)  # the latest: v2
    lineage = versions.read(str(out))
    assert lineage["latest"] == 2 and lineage["versions"][1]["plan"]["num_members"] == 4
    assert lineage["versions"][0]["components"]["settings"]["num_aug"] == 1
    assert "path: _versions/v2/parts/*.parquet" in (out / layout.CARD).read_text()

    caplog.clear()
    again = run(num_aug=2)  # the same settings: v2 resumed, nothing relabelled, no new version
    assert again["shards_skipped"] == 2 and again["images"] == 0 and "new version" not in caplog.text
    assert again["plan"]["changes"]["listed"] == 4
    with pytest.raises(FingerprintError, match="continue that version"):
        run(append=True)  # v1's settings, asked to continue v2: refused, nothing made
    assert len(versions.read(str(out))["versions"]) == 2

    assert main(["status", f"{out}@v1"]) == 0 and main(["diff", f"{out}@v1", str(out), "--json"]) == 0
    dest = tmp_path / "wds"
    assert main(["export", f"{out}@v1", str(dest), "--format", "webdataset", "--engine", "threads",
                 "--no-progress"]) == 0
    assert json.loads((dest / layout.MANIFEST).read_text())["samples"] == 4
