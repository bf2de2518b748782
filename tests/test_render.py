"""``annotator render`` on a real output: overlays line up with the image and the stored labels,
3D views exist per person, and the 3D geometry (frames, up, camera, ground) is right."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.outputs import dataset, render
from annotator.pipeline.layout import Output
from tests.helpers.jobs import annotator
from tests.helpers.shared_output import shared_output

IMAGE_ID = "pose2sim_cam01_f030.jpg"


@pytest.fixture(scope="module")
def labels(tmp_path_factory, samples_dir, default_model_path) -> Path:
    return shared_output(tmp_path_factory, samples_dir)


@pytest.fixture(scope="module")
def row(labels) -> dict:
    return dataset.find_rows(Output(str(labels)), ids=[IMAGE_ID])[0]


@pytest.fixture(scope="module")
def skeleton(labels) -> dict:
    return Output(str(labels)).metadata()["skeleton"]


@pytest.mark.slow  # the shared output: a job
def test_cli_writes_an_overlay_per_image_and_a_3d_view_per_person(labels, tmp_path, row):
    out = tmp_path / "png"
    proc = annotator("render", str(labels), "--out", str(out), "--ids", IMAGE_ID, "astronaut.png")
    assert proc.returncode == 0, proc.stderr[-2000:]
    overlay = out / f"{IMAGE_ID}.overlay.png"
    assert Path(proc.stdout.splitlines()[0]) == overlay
    img = Image.open(overlay)
    assert img.size == (row["width"], row["height"])
    views = sorted(out.glob(f"{IMAGE_ID}.person*.3d.png"))
    assert len(views) == row["num_people"] >= 1
    view = np.asarray(Image.open(views[0]).convert("RGB"))
    assert view.shape == (500, 1000, 3) and view.std() > 10
    assert (out / "astronaut.png.overlay.png").exists()


@pytest.mark.slow  # the shared output: a job
def test_overlay_draws_the_stored_labels_where_they_are(row, skeleton):
    image = dataset.load_image(row["source_uri"])
    drawn = np.asarray(render.overlay(image, row, skeleton, render.RenderConfig(joint_names=False)))
    assert drawn.shape == image.shape
    person = row["people"][0]
    sides = render.joint_sides(skeleton["joint_names"])
    conf = person["joint_confidences"]
    total = matched = 0
    for j, (u, v) in enumerate(person["joints2d"]):
        if not (0 <= u < row["width"] and 0 <= v < row["height"]) or conf[j] < 0.5:
            continue
        patch = drawn[int(round(v)) - 1:int(round(v)) + 2, int(round(u)) - 1:int(round(u)) + 2].reshape(-1, 3)
        want = {"L": render.LEFT, "R": render.RIGHT, "C": render.CENTER}[sides[j]]
        total += 1
        matched += want in {tuple(c) for c in patch}
    # a later joint or edge may cover a crowded joint (face, fingers); most show their own colour
    assert total >= 10 and matched >= 0.7 * total, (matched, total)
    # the box outline at the middle of its top edge has the quality colour (the job stored it)
    x, y, w, h = person["box"]
    assert person["quality"] is not None
    assert tuple(drawn[int(round(y)), int(round(x + w / 2))]) == render.value_color(person["quality"])
    # far from the person nothing changed
    far = (slice(0, 40), slice(row["width"] - 40, row["width"]))
    np.testing.assert_array_equal(drawn[far], image[far])


@pytest.mark.slow  # the shared output: a job
def test_overlay_scales_to_max_side_and_writes_joint_names(row, skeleton):
    image = dataset.load_image(row["source_uri"])
    small = render.overlay(image, row, skeleton, render.RenderConfig(max_side=480))
    assert max(small.size) == 480
    named = np.asarray(render.overlay(image, row, skeleton, render.RenderConfig(joint_names=True)))
    plain = np.asarray(render.overlay(image, row, skeleton, render.RenderConfig(joint_names=False)))
    assert (named != plain).any(axis=-1).sum() > 500  # the names are drawn


def test_joint_sides_for_our_and_official_metrabs_names():
    assert render.joint_sides(["nose", "left_eye", "right_wrist"]) == ["C", "L", "R"]
    assert render.joint_sides(["pelv", "lsho", "rsho", "lear", "rear", "neck"]) == ["C", "L", "R", "L", "R", "C"]


def ankles(skeleton: dict) -> list[int]:
    return [skeleton["joint_names"].index(n) for n in ("left_ankle", "right_ankle")]


@pytest.mark.slow  # the shared output: a job
def test_3d_geometry_camera_frame_is_upright(row, skeleton):
    g = render.scene_geometry(row, 0)
    assert g["frame"] == "camera" and not g["ground"]
    joints = g["joints"]
    head, feet = joints[skeleton["joint_names"].index("nose")], joints[ankles(skeleton)].mean(0)
    assert head[2] > feet[2] + 800  # standing person: head at least 0.8 m above the ankles
    assert joints[:, 1].mean() > 1000  # in front of the camera (display y = forward)
    np.testing.assert_allclose(g["camera"], 0)


@pytest.mark.slow  # the shared output: a job
def test_3d_geometry_world_frame_places_camera_and_ground(row, skeleton):
    """A camera 2 m up, tilted 20 degrees down, in a z-up world: the camera lands at its centre and
    the person stands above the ground plane's frame, drawn as z = 0."""
    tilt = math.radians(20)
    # world (x right, y forward, z up) -> camera (x right, y down, z forward), pitched down by tilt
    base = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)
    pitch = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    rot = pitch @ base
    centre = np.array([300.0, -500.0, 2000.0])
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, -rot @ centre
    cam = np.asarray(row["people"][0]["joints3d_cam"], np.float64)
    world = (cam - ext[:3, 3]) @ rot
    r = {**row, "extrinsics": ext.reshape(-1).tolist(),
         "people": [{**row["people"][0], "joints3d_world": world.tolist()}]}
    g = render.scene_geometry(r, 0, {"world_up_vector": [0.0, 0.0, 1.0]})
    assert g["frame"] == "world" and g["ground"]
    assert g["camera"][2] == pytest.approx(2000.0)  # display z = world up
    assert np.linalg.norm(g["camera"]) == pytest.approx(np.linalg.norm(centre))
    assert g["joints"][0, 2] > g["joints"][ankles(skeleton), 2].mean() + 800
    png = render.view3d(r, 0, {"joint_names": [], "edges": []}, {"world_up_vector": [0.0, 0.0, 1.0]})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # the shared output: a job
def test_missing_ids_and_error_rows(labels, tmp_path):
    proc = annotator("render", str(labels), "--out", str(tmp_path), "--ids", "nope.jpg")
    assert proc.returncode == 2 and "nope.jpg" in proc.stderr
    result = render.render(str(labels), str(tmp_path), ids=["x_truncated.jpg"])
    assert result.written == [] and result.skipped[0][0] == "x_truncated.jpg"
    assert "truncated" in result.skipped[0][1]


def test_images_come_from_files_tar_members_and_video_frames(samples_dir, tmp_path):
    """Rows point at tar members (``TAR#key.ext``) and video frames (``VIDEO#frame=N``) too; the
    renderer and the loader read them as the labelling job did."""
    import tarfile

    from annotator.pipeline import decode

    ref = decode.decode((samples_dir / "camera.png").read_bytes()).image
    tar = tmp_path / "shard.tar"
    with tarfile.open(tar, "w") as t:
        t.add(samples_dir / "camera.png", arcname="d/k1.png")
    np.testing.assert_array_equal(dataset.load_image(f"{tar}#d/k1.png"), ref)
    video = samples_dir.parent / "pose2sim" / "Demo_SinglePerson" / "videos" / "cam01.mp4"
    still = decode.decode((samples_dir / "pose2sim_cam01_f030.jpg").read_bytes()).image  # frame 30, JPEG q90
    err = [np.abs(dataset.load_image(f"{video}#frame={i}").astype(int) - still).mean() for i in (29, 30, 31)]
    assert err[1] < 1.2 and err[1] < min(err[0], err[2]), err
    with pytest.raises(ValueError, match="no frame"):
        dataset.load_image(f"{video}#frame=100000")
