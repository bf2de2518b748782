"""``annotator export`` from and to object stores (GCS emulator, moto's S3 on loopback), on Ray, and on
a real labelled output (crops reproject onto the source image's joints through the stored cameras)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from annotator.outputs.export import ExportConfig, export
from annotator.pipeline import layout
from tests.helpers import emulators, synthetic
from tests.helpers.jobs import annotator
from tests.helpers.shared_output import shared_output


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_gcs_in_and_out(tmp_path):
    import webdataset as wds

    with emulators.gcs() as (so, fs):
        fs.mkdir("exp-in")
        fs.mkdir("exp-out")
        rows = synthetic.write_output("gs://exp-in/labels", "gs://exp-in/images", storage_options=so)
        summary = export("gs://exp-in/labels", "gs://exp-out/wds", ExportConfig("webdataset", storage_options=so,
                                                                                   progress=False))
        assert (summary["samples"], summary["people"]) == (6, 9)
        listing = set(fs.find("exp-out/wds"))
        assert {"exp-out/wds/000000.tar", "exp-out/wds/000001.tar", "exp-out/wds/_manifest.json"} <= listing
        assert not any("_attempts" in p for p in listing)
        # read back with the webdataset package, from bytes fetched through the bucket's fsspec
        local = tmp_path / "copy"
        local.mkdir()
        for name in ("000000.tar", "000001.tar"):
            (local / name).write_bytes(fs.cat_file(f"exp-out/wds/{name}"))
        got = list(wds.WebDataset(str(local / "{000000..000001}.tar"), shardshuffle=False).decode("rgb8"))
        assert sorted(s["json"]["image_id"] for s in got) == sorted(k for k, r in rows.items() if r["status"] == "ok")
        assert all(s["json"]["source_uri"].startswith("gs://exp-in/images/") for s in got)

        # the command, with storage options for the emulator; COCO to a local folder
        proc = annotator("export", "gs://exp-in/labels", str(tmp_path / "coco"), "--format", "coco",
                         "--storage-options", json.dumps(so), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
        coco = json.loads((tmp_path / "coco" / "person_keypoints.json").read_text())
        assert (len(coco["images"]), len(coco["annotations"])) == (6, 9)


def test_s3_in_and_out():
    with emulators.s3() as (so, fs):
        fs.mkdir("exp-s3")
        synthetic.write_output("s3://exp-s3/labels", "s3://exp-s3/images", shards=1, storage_options=so)
        summary = export("s3://exp-s3/labels", "s3://exp-s3/coco", ExportConfig("coco", storage_options=so,
                                                                                 progress=False))
        assert (summary["samples"], summary["people"]) == (3, 5)
        fs.invalidate_cache()
        coco = json.loads(fs.cat_file("exp-s3/coco/person_keypoints.json"))
        assert len(coco["annotations"]) == 5 and coco["categories"][0]["name"] == "person"
        assert layout.Output("s3://exp-s3/coco", so).part_uris() == ["s3://exp-s3/coco/_coco/part-000000.json"]


@pytest.mark.slow  # Ray
def test_ray_engine_writes_the_same_bytes(ray_cluster, tmp_path):
    src = str(tmp_path / "labels")
    synthetic.write_output(src, str(tmp_path / "images"), shards=3, per_shard=2)
    on_ray = export(src, str(tmp_path / "ray"), ExportConfig("webdataset", engine="ray", progress=False))
    threads = export(src, str(tmp_path / "threads"), ExportConfig("webdataset", engine="threads", progress=False))
    assert on_ray["engine"] == "ray" and threads["engine"] == "threads" and on_ray["samples"] == 6
    for name in ("000000.tar", "000001.tar", "000002.tar"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "threads" / name).read_bytes()


@pytest.fixture(scope="module")
def labels(tmp_path_factory, samples_dir, default_model_path):
    return shared_output(tmp_path_factory, samples_dir)


@pytest.mark.slow  # the shared output: a job
def test_real_output_crops_reproject_onto_the_source(labels, tmp_path):
    """Each crop's 3D, projected through its stored intrinsics and taken back to the source image
    through the stored rotation and source camera, lands on the job's 2D joints (< 1 px)."""
    from annotator.estimator import crops as geometry

    proc = annotator("export", str(labels), str(tmp_path / "crops"), "--format", "crops", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["image_id"]: r for r in layout.Output(str(labels)).read_table().to_pylist()}
    files = {}
    for tar in sorted((tmp_path / "crops").glob("*.tar")):
        files.update(_tar_members(tar.read_bytes()))
    crops = [json.loads(v) for k, v in files.items() if k.endswith(".json")]
    assert len(crops) == sum(r["num_people"] for r in rows.values()) >= 3
    worst = 0.0
    for lab in crops:
        person = rows[lab["image_id"]]["people"][lab["person"]]
        x3 = np.asarray(lab["joints3d"], np.float32)
        k = np.asarray(lab["intrinsics"], np.float32)
        uv = x3[:, :2] / x3[:, 2:3] * np.diag(k)[:2] + k[:2, 2]
        dist = np.asarray(lab["source_distortion"] or [0.0] * 5, np.float32)
        back, valid = geometry.crop_to_image_points(
            uv[None], np.asarray(lab["source_intrinsics"], np.float32)[None],
            np.asarray(lab["rotation"], np.float32)[None], k[None], dist[None] if dist.any() else None)
        assert bool(np.all(valid))
        worst = max(worst, float(np.abs(back.numpy()[0] - np.asarray(person["joints2d"])).max()))
    assert worst < 1.0


@pytest.mark.slow  # the shared output: a job
def test_real_output_webdataset_and_coco(labels, tmp_path):
    import webdataset as wds
    from pycocotools.coco import COCO

    proc = annotator("export", str(labels), str(tmp_path / "wds"), "--format", "webdataset", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "wds").glob("*.tar")), shardshuffle=False)
               .decode("rgb8"))
    assert len(got) == 3  # the ok rows
    for s in got:
        image = next(s[k] for k in ("jpg", "png") if k in s)
        assert image.shape[:2] == (s["json"]["height"], s["json"]["width"])
    proc = annotator("export", str(labels), str(tmp_path / "coco"), "--format", "coco", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    gt = COCO(str(tmp_path / "coco" / "person_keypoints.json"))
    assert len(gt.getImgIds()) == 3 and len(gt.getAnnIds()) == sum(len(s["json"]["people"]) for s in got)
