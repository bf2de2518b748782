"""``OUTPUT/README.md``, the Hugging Face dataset card: ``datasets.load_dataset(OUTPUT)`` with no other
argument loads the labels (features = the parts' own schema, offline), the card states counts,
errors, the quality distribution and the model; on GCS (emulator) the card's ``data_files`` load
through fsspec; a real job writes it when it ends.

Two licences: the header's ``license`` is the labels' (``--license``, default ``other`` with a sentence
that the labels follow the images' terms); the weights' licence is a Provenance row, never the header's
(every default-model card used to say ``license: apache-2.0``). ``annotator card --licence`` keeps its
old meaning (the weights') and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest
import yaml

from annotator.labels import schema
from annotator.outputs import card
from annotator.pipeline import layout, sink
from tests.helpers import emulators
from tests.helpers.shared_output import shared_output

LOAD = """
import json, sys
import datasets
args = json.loads(sys.argv[1])
ds = datasets.load_dataset(*args["args"], split="train", cache_dir=args["cache"], **args.get("kwargs", {}))
print("RESULT", json.dumps({"ids": sorted(ds["image_id"]), "rows": ds.num_rows,
                            "people": [[p["quality"] for p in r] for r in ds["people"]],
                            "features": ds.features.to_dict()}))
"""


def load_dataset(tmp_path, *args, offline: bool = True, **kwargs) -> dict:
    """``datasets.load_dataset(*args, **kwargs)`` in a fresh interpreter (offline: nothing may download;
    online only where ``datasets`` needs it to open gs:// at all, with no network to reach)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    arg = json.dumps({"args": list(args), "kwargs": kwargs, "cache": str(tmp_path / "hf-cache")})
    proc = subprocess.run([sys.executable, "-c", LOAD, arg], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])

J = 3
META = schema.file_metadata({"id": "annotator/default-full", "reference": "default", "sha256": "ab" * 32},
                            {"name": "tiny", "joint_names": ["nose", "left_hip", "right_hip"], "edges": [[1, 2]]},
                            {"num_aug": 1, "world_up_vector": [0.0, -1.0, 0.0]})


def _person(q: float | None, score: float = 0.9) -> dict:
    return {"box": [10.0, 20.0, 30.0, 60.0], "score": score, "pose_score": 0.8,
            "joints2d": [[20.0 + j, 30.0 + j] for j in range(J)],
            "joints3d_cam": [[j, 2.0 * j, 3000.0] for j in range(J)],
            "joints3d_world": None, "joint_confidences": [0.9] * J, "quality": q, "depth_sigma_mm": 180.0,
            "depth_source": "monocular"}


def _rows(shard: str, qualities: list[list[float | None]], errors: int = 0) -> pa.Table:
    rows = []
    for i, qs in enumerate(qualities):
        rows.append({"image_id": f"{shard}/img{i}.jpg", "source_uri": f"/x/{shard}/img{i}.jpg", "shard": shard,
                     "width": 64, "height": 96, "status": "ok", "error": None,
                     "intrinsics": [80, 0, 31.5, 0, 80, 47.5, 0, 0, 1],
                     "distortion": [], "extrinsics": None, "camera_source": "default_fov", "num_people": len(qs),
                     "people": [_person(q) for q in qs]})
    for i in range(errors):
        rows.append({"image_id": f"{shard}/bad{i}.jpg", "source_uri": f"/x/{shard}/bad{i}.jpg", "shard": shard,
                     "width": None, "height": None, "status": "error", "error": "truncated: cut short",
                     "intrinsics": None, "distortion": None, "extrinsics": None, "camera_source": None,
                     "num_people": 0, "people": []})
    return pa.Table.from_pylist(rows, schema=schema.arrow_schema())


def make_output(uri: str, storage_options: dict | None = None) -> dict:
    """A small committed output (two parts, one error row), as a job leaves it."""
    s = sink.DatasetSink(uri, file_metadata=META, fingerprint="fp", storage_options=storage_options)
    s.makedirs()
    records = {"000000": s.write_shard("000000", _rows("000000", [[0.95, 0.15], [0.55]], errors=1)),
               "000001": s.write_shard("000001", _rows("000001", [[], [None, 0.85]]))}
    return s.write_manifest(records, final=True, shards_total=2)


def test_load_dataset_with_no_other_argument(tmp_path):
    import datasets

    out = str(tmp_path / "labels")
    make_output(out)
    path = card.write_card(out, licence="Apache-2.0 (test weights)")
    assert path == f"{out}/README.md"
    ds = load_dataset(tmp_path, out)
    reference = layout.Output(out).read_table()
    assert ds["rows"] == reference.num_rows == 5
    assert ds["ids"] == sorted(reference.column("image_id").to_pylist())
    assert ds["features"] == datasets.Features.from_arrow_schema(reference.schema).to_dict()  # nothing cast
    assert sorted(q for qs in ds["people"] for q in qs if q is not None) == pytest.approx([0.15, 0.55, 0.85, 0.95])

    text = (tmp_path / "labels" / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other" and header["license_name"] == "follows-source-images"
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "parts/*.parquet"}]
    body = text.split("---\n", 2)[2]
    assert "| images (rows) | 5 |" in body and "| people | 5 |" in body and "| truncated | 1 |" in body
    # quality deciles of the 4 people with a quality: 0.15, 0.55, 0.85, 0.95
    assert "| 0.1-0.2 | 1 | 25.0 % |" in body and "| 0.9-1.0 | 1 | 25.0 % |" in body
    assert "`annotator/default-full`" in body and "abab" in body
    assert "| weights licence | Apache-2.0 (test weights) |" in body
    assert "follow the images' terms" in body and "No licence was given" in body


def _header_and_body(path) -> tuple[dict, str]:
    text = path.read_text()
    return yaml.safe_load(text.split("---\n")[1]), text.split("---\n", 2)[2]


def test_labels_licence_apart_from_the_weights(tmp_path):
    out = tmp_path / "labels"
    make_output(str(out))
    card.write_card(str(out), licence="Apache-2.0 (test weights)", labels_licence="cc-by-nc-4.0")
    header, body = _header_and_body(out / "README.md")
    assert header["license"] == "cc-by-nc-4.0" and "license_name" not in header
    assert "Labels: cc-by-nc-4.0" in body and "| weights licence | Apache-2.0 (test weights) |" in body
    # a run keeps its --license in the summary: a rewritten card (no --license) keeps it
    (out / "_summary.json").write_text(json.dumps({"license": "Custom research terms", "input": "/x"}))
    card.write_card(str(out))
    header, body = _header_and_body(out / "README.md")
    assert header["license"] == "other" and header["license_name"] == "custom-research-terms"
    assert "Labels: Custom research terms" in body


def test_card_command_licence_flags(tmp_path):
    out = tmp_path / "labels"
    make_output(str(out))

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "annotator.cli", "card", str(out), *args], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return (*_header_and_body(out / "README.md"), proc.stderr)
    header, body, err = cli("--licence", "MIT (old script)")  # its meaning since cards exist: the weights'
    assert header["license"] == "other" and "| weights licence | MIT (old script) |" in body
    assert "--weights-licence" in err and "--license" in err
    header, body, err = cli("--license", "cc-by-4.0", "--weights-licence", "Apache-2.0 (w)")
    assert header["license"] == "cc-by-4.0" and "| weights licence | Apache-2.0 (w) |" in body and err == ""


def test_card_details():
    assert card.hf_licence("Apache-2.0 (MoveNet, BlazePose GHUM 3D weights by Google)") == "apache-2.0"
    assert card.hf_licence("Custom research licence") == "other" and card.hf_licence(None) == "unknown"
    assert [card.size_category(n) for n in (5, 5_000, 2_000_000)] == ["n<1K", "1K<n<10K", "1M<n<10M"]
    feats = card.features(schema.arrow_schema())
    people = next(f for f in feats if f["name"] == "people")
    assert people["list"][0] == {"name": "box", "list": "float32"}
    assert {"name": "joints3d_cam", "list": {"list": "float32"}} in people["list"]


def test_gcs_card_and_data_files_through_fsspec(tmp_path):
    with emulators.gcs() as (so, fs):
        fs.mkdir("cards")
        out = "gs://cards/labels"
        make_output(out, so)
        card.write_card(out, so)
        header = yaml.safe_load(fs.cat_file("cards/labels/README.md").decode().split("---\n")[1])
        files = {f["split"]: f"{out}/{f['path']}" for f in header["configs"][0]["data_files"]}
        ds = load_dataset(tmp_path, "parquet", data_files=files, storage_options=so["gs"], offline=False)
        assert ds["ids"] == sorted(layout.Output(out, so).read_table().column("image_id").to_pylist())
        assert ds["rows"] == 5


@pytest.mark.slow  # the shared output: a job
def test_a_job_writes_its_card(tmp_path_factory, samples_dir, default_model_path, tmp_path):
    out = shared_output(tmp_path_factory, samples_dir)
    text = (out / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    # the labels follow the images (no --license given); the default model's Apache-2.0 is the weights'
    assert header["license"] == "other" and "| errors | 2 |" in text
    assert "| weights licence | Apache-2.0" in text
    ds = load_dataset(tmp_path, str(out))
    assert ds["ids"] == sorted(layout.Output(str(out)).read_table().column("image_id").to_pylist())


def test_card_shows_no_credentials(tmp_path):
    """A second guard (runs refuse URIs with credentials): whatever the summary or a filter's record
    holds, the card shows its URIs redacted."""
    secret = "PLANTED-CARD-SECRET-e2b7"
    out = tmp_path / "labels"
    make_output(str(out))
    (out / "_summary.json").write_text(json.dumps({"input": f"s3://KEY:{secret}@bucket/in"}))
    (out / "_filter.json").write_text(json.dumps({"source": f"https://host/src?sig={secret}", "min_quality": 0.5}))
    card.write_card(str(out))
    text = (out / "README.md").read_text()
    assert secret not in text
    assert "`s3://***@bucket/in`" in text and "`https://host/src?sig=***`" in text
