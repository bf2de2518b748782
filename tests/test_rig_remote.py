"""A rig on an object store (moto's S3 and the GCS emulator, on loopback): the check, the plan rows
and the read see what they see in the same rig on the local disk, and the one-line ``RigError``s are
the same (``annotator.pipeline.rig``, ``rig_source``, ``calibration``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from annotator.pipeline import calibration, rig, spec
from tests.helpers import emulators

from .test_eval_multiview import SINGLE, _cameras

BUCKET = "rig-remote"
SIZE = (64, 48)
FRAMES = 3


def _toml(cams) -> str:
    def arr(a) -> str:
        return json.dumps(np.asarray(a, np.float64).tolist())

    return "".join(f'[{c.name}]\nname = "{c.name}"\nsize = {arr(c.size)}\nmatrix = {arr(c.intrinsics)}\n'
                   f'distortions = {arr(c.distortion)}\nR = {arr(c.rotation)}\ntranslation = {arr(c.translation)}\n'
                   f'units = "mm"\n\n' for c in cams)


def _video(path, frames, size):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (40 * i, 100, 200 - 40 * i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _rig(root, misfit=False, calib=True):
    """RIG/cam01/, RIG/cam02/ (PNG frames; cam02 48 pixels wider when ``misfit``), RIG/cam03.mp4 and
    RIG/calibration/calib.toml."""
    for v in (1, 2):
        d = root / f"cam{v:02d}"
        d.mkdir(parents=True)
        size = (SIZE[0] + 48, SIZE[1]) if misfit and v == 2 else SIZE
        for i in range(FRAMES):
            Image.new("RGB", size, (30 * v, 60 * i, 9)).save(d / f"{i + 1:06d}.png")
    (root / "notes").mkdir()  # a folder without images is no view
    (root / "notes" / "readme.txt").write_text("not a view")
    _video(root / "cam03.mp4", FRAMES, SIZE)
    if calib:
        (root / "calibration").mkdir()
        (root / "calibration" / "calib.toml").write_text(
            _toml([dataclasses.replace(c, size=SIZE) for c in _cameras(3)]))
    return root


@pytest.fixture(scope="module", params=["s3", "gs"])
def store(request, tmp_path_factory):
    """(storage options, local root, name -> its URI in the bucket): rig/, misfit/, nocalib/ and qca/
    (Pose2Sim's Qualisys file), both under the local root and in the bucket."""
    local = tmp_path_factory.mktemp("rigs")
    _rig(local / "rig")
    _rig(local / "misfit", misfit=True)
    _rig(local / "nocalib", calib=False)
    (local / "qca").mkdir()
    (local / "qca" / "Calib.qca.txt").write_bytes((SINGLE / "calibration" / "Calib.qca.txt").read_bytes())
    with {"s3": emulators.s3, "gs": emulators.gcs}[request.param]() as (so, fs):
        fs.mkdir(BUCKET)
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.pipe_file(f"{BUCKET}/{f.relative_to(local).as_posix()}", f.read_bytes())

        def remote(name: str) -> str:
            return f"{request.param}://{BUCKET}/{name}"

        yield so, local, remote


def _spec(where, so=None, **rig_opts) -> spec.RunSpec:
    return spec.RunSpec(input=str(where), output="unused", storage_options=so or {}, rig=rig.RigSpec(**rig_opts))


def test_a_rig_on_an_object_store_loads_as_its_local_copy(store):
    so, local, remote = store
    here, there = rig.load(_spec(local / "rig")), rig.load(_spec(remote("rig"), so))
    assert [v.name for v in there.views] == [v.name for v in here.views] == ["cam01", "cam02", "cam03"]
    assert [(v.frames, v.size, v.offset) for v in there.views] == [(v.frames, v.size, v.offset) for v in here.views]
    assert [v.size for v in there.views] == [SIZE] * 3 and there.frames == here.frames == FRAMES
    assert there.fps == here.fps == 25.0
    assert [v.source for v in there.views] == [remote("rig/cam01"), remote("rig/cam02"), remote("rig/cam03.mp4")]
    for a, b in zip(here.cameras, there.cameras, strict=True):
        assert a.name == b.name and a.size == b.size
        np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
        np.testing.assert_array_equal(a.extrinsics, b.extrinsics)
    # a calibration file given by its URI, and Qualisys' (Z-up) through fsspec too
    assert [c.name for c in calibration.read(remote("rig/calibration/calib.toml"), so)] == ["cam01", "cam02", "cam03"]
    want = calibration.load(local / "qca")
    got = calibration.load(remote("qca"), so)
    assert [c.name for c in got] == [c.name for c in want]
    np.testing.assert_array_equal(got[0].extrinsics, want[0].extrinsics)
    assert rig.with_world_up(_spec(remote("rig"), so, calibration=remote("qca"))).settings.world_up_vector == (
        0.0, 0.0, 1.0)
    assert rig.with_world_up(_spec(remote("rig"), so)).settings.world_up_vector == spec.RunSpec(
        "i", "o").settings.world_up_vector


def test_plan_rows_name_the_store_and_read_the_same_images(store):
    so, local, remote = store
    rs = rig.RigSpec(window=2, overlap=1)
    here = rig.plan_rows(rig.load(_spec(local / "rig")), rs, str(local / "rig"))
    there = rig.plan_rows(rig.load(_spec(remote("rig"), so)), rs, remote("rig"), so)
    assert [(r["start"], r["stop"], r["name"]) for r in there] == [(r["start"], r["stop"], r["name"]) for r in here]
    first = json.loads(there[0]["camera"])["views"]
    assert first[0]["files"] == [remote(f"rig/cam01/{i:06d}.png") for i in (1, 2, 3)]
    assert first[2]["video"] == remote("rig/cam03.mp4")
    local_first = json.loads(here[0]["camera"])["views"]  # local plans keep resolved paths, as they always did
    assert local_first[1]["files"] == [str((local / "rig" / "cam02" / f"{i:06d}.png").resolve()) for i in (1, 2, 3)]
    assert local_first[2]["video"] == str((local / "rig" / "cam03.mp4").resolve())
    for a, b in zip(here, there, strict=True):
        got, want = list(rig.read_views(b, so)), list(rig.read_views(a))
        doc = json.loads(b["camera"])
        assert [g[0] for g in got] == [w[0] for w in want] and len(got) == (doc["read_stop"] - doc["read_start"]) * 3
        for (_, uri, frame, data, _), (_, _, want_frame, want_data, _) in zip(got, want, strict=True):
            assert uri.startswith(remote(""))
            if want_data is not None:
                assert data == want_data
            else:
                np.testing.assert_array_equal(frame, want_frame)


def test_a_misfit_or_missing_remote_rig_is_the_same_one_line_error(store):
    so, local, remote = store
    misfit = "cam02: its frames are 112x48 but camera cam02 is calibrated for 64x48"
    for where, opts in ((local / "misfit", None), (remote("misfit"), so)):
        with pytest.raises(rig.RigError, match=misfit):
            rig.load(_spec(where, opts))
    with pytest.raises(rig.RigError) as local_error:
        rig.load(_spec(local / "nocalib"))
    assert str(local_error.value) == f"{local / 'nocalib' / 'calibration'}: no calibration (give --rig-calibration " \
                                     "or [rig] calibration)"
    with pytest.raises(rig.RigError) as remote_error:
        rig.load(_spec(remote("nocalib"), so))
    assert str(remote_error.value) == str(local_error.value).replace(str(local / "nocalib"), remote("nocalib"))
    with pytest.raises(rig.RigError, match=f"^{remote('nowhere')}: no such rig folder"):
        rig.load(_spec(remote("nowhere"), so, calibration=remote("rig/calibration")))
    with pytest.raises(rig.RigError, match=f"^{remote('rig/nothing.toml')}: no calibration"):
        rig.load(_spec(remote("rig"), so, calibration=remote("rig/nothing.toml")))
