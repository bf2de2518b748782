"""What the reliability tests and ``run_matrix.py`` share: the test-sized input, job specs as TOML
(drivers run as separate processes, as users run them), and the one check every scenario ends
with: the output, read through its manifest, holds each expected image exactly once, every part
verified against its commit record, nothing under ``parts/`` that the manifest does not list,
and labels equal to an uninterrupted run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers.photos import write_photos

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ANNOTATOR = str(Path(sys.executable).with_name("annotator"))
N_PHOTOS = 15  # + 1 broken file: 16 rows, 8 shards of 2
BROKEN = "zz_broken.jpg"
# the tiny model is deterministic, but a batch composed differently may move the last bits
ATOL = {"box": 1e-3, "score": 1e-5, "joints2d": 1e-3, "joints3d_cam": 1e-2, "quality": 1e-4}


def make_photos(folder: Path, n: int = N_PHOTOS) -> list[str]:
    """``n`` small real photos and one broken file (an error row that must survive like the others)."""
    names = write_photos(folder, n)
    (folder / BROKEN).write_bytes(b"<html>not a photo</html>")
    return [*names, BROKEN]


def tiny_model_folder(folder: Path, work: int = 0, fail: str = "") -> str:
    """The tiny official-API model (``tiny_model.build``) with the build info annotator's own models
    carry (the skeleton), so the driver does not load TensorFlow to learn it."""
    from tests.reliability import tiny_model

    if not (folder / "saved_model.pb").exists():
        subprocess.run([PYTHON, "-m", "tests.reliability.tiny_model", str(folder), str(work), fail], cwd=REPO,
                       check=True, capture_output=True)
        info = {"id": f"tiny-{work}{'-fails-' + fail if fail else ''}", "native_skeleton": "tiny_5",
                "skeletons": {"tiny_5": {"joint_names": list(tiny_model.JOINTS),
                                         "edges": [list(e) for e in tiny_model.EDGES]}}}
        (folder / "annotator_model.json").write_text(json.dumps(info))
    return str(folder)


def spec_toml(path: Path, input: str, output: str, model: str, compute: dict | None = None, **top) -> Path:
    """A job spec file sized for 2 cores (fractional CPUs, short no-progress timeout)."""
    compute = {"actors": 1, "cpus_per_actor": 0.25, "decode_cpus": 0.25, "read_cpus": 0.25, "batch_size": 2,
               "read_batch": 2, "no_progress_timeout_s": 60.0, "actor_start_timeout_s": 120.0, "shard_attempts": 3,
               "commit_threads": 2, **(compute or {})}
    data = {"input": input, "output": output, "model": model, "shard_size": 2, "progress": False, **top}

    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, body in [*((k, v) for k, v in data.items() if isinstance(v, dict)),
                        ("settings", {"num_aug": 1}), ("compute", compute)]:
        lines += [f"[{table}]", *(f"{k} = {value(v)}" for k, v in body.items() if not isinstance(v, dict))]
        lines += [x for k, v in body.items() if isinstance(v, dict)
                  for x in (f"[{table}.{k}]", *(f"{kk} = {value(vv)}" for kk, vv in v.items()))]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([ANNOTATOR, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def rows_by_id(output: str, storage_options: dict | None = None) -> dict[str, dict]:
    """The committed rows of ``output``, checked: read through the manifest (each part against the
    sha256 of its commit record), every image id once, and ``parts/`` holding the manifest's parts
    and nothing else (no partial or uncommitted part reachable by a glob either)."""
    from annotator.pipeline import layout

    out = layout.Output(output, storage_options)
    manifest = out.manifest()
    assert manifest["final"], "the job did not finish: its manifest is not final"
    table = out.read_table()  # verifies every part's checksum
    ids = table.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)), "an image id is in the dataset twice"
    listed = {p for p in out.listing(layout.PARTS)}
    assert listed == set(manifest["parts"]), (sorted(listed), manifest["parts"])
    assert sum(r["rows"] for r in manifest["records"]) == table.num_rows
    return {r["image_id"]: r for r in table.to_pylist()}


def assert_same(got: dict[str, dict], ref: dict[str, dict], moved: tuple[str, str] | None = None) -> None:
    """The same images, each with equal fields and people (within ``ATOL``); ``moved``: (input URI
    of ``got``, input folder of ``ref``), the same files copied elsewhere (an object store)."""
    from tests.helpers.jobs import assert_same_labels

    if moved:
        src, local = (x.rstrip("/") + "/" for x in moved)
        assert all(r["source_uri"].startswith(src) for r in got.values())
        got = {k: {**r, "source_uri": local + r["source_uri"][len(src):]} for k, r in got.items()}
    assert_same_labels(got, ref, atol={k: v for k, v in ATOL.items() if k != "score"})
    for image_id, r in ref.items():
        for pg, pr in zip(got[image_id]["people"], r["people"], strict=True):
            np.testing.assert_allclose(pg["score"], pr["score"], atol=ATOL["score"])
            np.testing.assert_allclose(pg["quality"], pr["quality"], atol=ATOL["quality"])


def summary(output: str) -> dict:
    return json.loads((Path(output) / "_summary.json").read_text())
