"""GPU proxy benchmark, local half: the default model's two networks as ONNX, checked against TF.

Why: for a GPU machine where TensorFlow cannot be installed but PyTorch can (see ``README.md``
here). The networks of ``default-full`` are converted on a machine with the repo's venv, TF
SavedModel -> ONNX (tf2onnx, opset 13), verified against TensorFlow on the CPU, and timed on the
GPU in PyTorch (onnx2torch) by ``gpu_proxy_device.py``.

What this script does (all on the CPU, here):

1. converts the two cached component SavedModels (``~/.cache/annotator/components/<name>/1``,
   built by ``annotator models build-default``) with ``python -m tf2onnx.convert``:
   ``blazepose-full`` (crop network; input ``input_1`` float32 [B,256,256,3] in [0,1], batch axis
   dynamic; outputs ``ld_3d`` [B,195], ``world_3d`` [B,117], ``output_poseflag`` [B,1]) and
   ``movenet-multipose`` (detector; input ``input`` int32 [1,H,W,3], H and W dynamic multiples of 32;
   output ``output_0`` [1,6,56]; its graph squeezes the batch axis, so batch 1 only);
2. rewrites what onnx2torch 1.5 cannot convert in MoveNet's graph into equivalent ONNX: 2 ``Size``
   nodes -> ``ReduceProd(Shape(x))``, and ``auto_pad=SAME_UPPER`` (65 Conv, 1 MaxPool) -> explicit
   pads, exact for inputs whose sides are multiples of 32 (the detector's are); see
   ``onnx2torch_friendly``. The TF-vs-onnxruntime check runs on the rewritten files;
3. makes real inputs: the annotator's own MoveNet detector (the TF code path, default views) finds
   the people in ``samples/images``; each top box, squared and enlarged 1.25x (BlazePose's
   ``box_scale``), is cut out and resized to 256x256 (an axis-aligned crop: not the pipeline's
   virtual-camera warp, but a real person crop); MoveNet's inputs are the two default views
   (256 px, and 512 px with 20 % padding) of a 1088x1920 Pose2Sim frame, built as ``detectors.py``
   builds them;
4. runs TF (SavedModel signature) and onnxruntime (CPU) on the same inputs and reports the max abs
   difference of every output; writes the ``.onnx`` files, ``reference.npz`` (inputs + TF outputs,
   so the device script can compare PyTorch on the GPU to TensorFlow directly) and
   ``manifest.json`` (versions, shapes, differences) into ``--out`` (default ``.gpuproxy/`` in the
   repository, for the device half to read);
5. checks ``movenet_network`` (MoveNet cut before its decode, FPN ``Resize`` by constant scales,
   which the device half also times) against the same cut with the original ``sizes``.

What the device half measures: network forward passes only, inputs already on the GPU (eager
PyTorch, and replayed CUDA graphs; float32, TF32, float16). It does NOT
measure TensorFlow, JPEG decode, the detector views' resize/letterbox, the crop warp (virtual
camera, pyramid sampling), NMS, 3D reconstruction, filters, host<->device copies or the Ray/Beam
pipeline. So its numbers are an upper bound for what the networks allow, not an annotator speed.

Network calls per image in the default model (``detect_poses(_batched)``, defaults
``num_aug=5``, ``internal_batch_size=64``, ``detector_flip_aug=False``):

- detector: one MoveNet call per view, 2 views (``MoveNetMultiPose.DEFAULT_VIEWS``: the image at
  256 px and padded by 20 % at 512 px), batch 1 each, per image (4 with ``detector_flip_aug``);
- crop network: per detected person, 1 + num_aug crops = 6 crop passes, because
  ``refine_crops`` (on for BlazePose) runs ONE alignment pass per box (MediaPipe's second-pass ROI
  from landmarks 33/34) and then num_aug augmented crops of the refined box. Boxes go in chunks of
  ``internal_batch_size // num_aug`` = 12 (batched across images), so the crop network runs at
  batch <= 12 (alignment) and <= 60 (augmentations) per chunk.

Hence network time per image ~ t_movenet(256 view) + t_movenet(512 view) + people x 6 crops /
crops-per-second; the device script reports that estimate for one person per image.

Run (repo venv for TF; ``requirements-convert.txt`` in a throwaway folder, never in .venv)::

    .venv/bin/python -m pip install --no-deps --target /tmp/gpuproxy/site \\
        -r bench/experimental/requirements-convert.txt
    PYTHONPATH=/tmp/gpuproxy/site .venv/bin/python bench/experimental/gpu_proxy.py --out .gpuproxy

then the device half (see ``gpu_proxy_device.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "samples" / "images"
COMPONENTS = ("blazepose-full", "movenet-multipose")
CROP_IMAGES = ("astronaut.png", "camera.png", "pose2sim_cam01_f030.jpg", "pose2sim_cam03_f030.jpg")
MOVENET_IMAGE = "pose2sim_cam03_f030.jpg"  # 1088x1920, the size of the benchmark frames


def convert(saved_model: Path, out: Path, opset: int) -> float:
    """tf2onnx CLI in a subprocess (same interpreter and PYTHONPATH); returns seconds taken."""
    started = time.time()
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--tag", "serve",
           "--signature_def", "serving_default", "--opset", str(opset), "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tf2onnx failed on {saved_model}:\n{proc.stderr[-4000:]}")
    return time.time() - started


def onnx2torch_friendly(path: Path) -> dict[str, int]:
    """Rewrite what onnx2torch 1.5 cannot convert into equivalent ONNX; returns counts per rewrite.

    - ``Size(x)`` -> ``ReduceProd(Shape(x), keepdims=0)``: the same int64 scalar;
    - ``auto_pad=SAME_UPPER`` on Conv/MaxPool -> explicit ``pads``: total padding per axis
      ``max((k - 1) * d + 1 - s, 0)`` (the extra one at the end), which is what SAME_UPPER gives
      whenever the input size along that axis is a multiple of the stride. MoveNet's inputs are
      multiples of 32 and it downsamples by 2 at most 5 times, so every strided layer sees an even
      size; the TF-vs-onnxruntime check below runs on the rewritten file.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    kernels = {i.name: list(i.dims) for i in model.graph.initializer}
    nodes = []
    counts = {"Size": 0, "SAME_UPPER": 0}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Size":
            counts["Size"] += 1
            shape_out = node.output[0] + "__shape"
            nodes.append(helper.make_node("Shape", [node.input[0]], [shape_out], name=node.name + "__shape"))
            nodes.append(helper.make_node("ReduceProd", [shape_out], [node.output[0]], name=node.name + "__prod",
                                          keepdims=0))
            continue
        if node.op_type in ("Conv", "MaxPool") and attrs.get("auto_pad") == b"SAME_UPPER":
            counts["SAME_UPPER"] += 1
            kernel = list(attrs.get("kernel_shape") or kernels[node.input[1]][2:])
            rank = len(kernel)
            strides = list(attrs.get("strides") or [1] * rank)
            dilations = list(attrs.get("dilations") or [1] * rank)
            total = [max((k - 1) * d + 1 - s, 0) for k, s, d in zip(kernel, strides, dilations, strict=True)]
            begin = [t // 2 for t in total]
            end = [t - b for t, b in zip(total, begin, strict=True)]
            for a in list(node.attribute):
                if a.name in ("auto_pad", "pads"):
                    node.attribute.remove(a)
            node.attribute.extend([helper.make_attribute("pads", begin + end)])
        nodes.append(node)
    if any(counts.values()):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return counts


MOVENET_HEADS = ("kpt_regress_0", "kpt_offset_0", "kpt_heatmap_0", "center_0", "box_scale_0", "box_offset_0")


def movenet_network(model):
    """MoveNet without its decode: ``input`` -> the 6 head convolutions (NCHW), as a ModelProto.

    The decode (heatmap peak search, TopK, GatherND, box assembly) is cut away, and each FPN
    ``Resize`` gets constant ``scales`` [1,1,2,2] instead of ``sizes`` computed from ``Shape``
    (exact: every FPN level is twice the next for inputs whose sides are multiples of 32), so the
    network has no shape arithmetic left (onnx2torch would otherwise sync with the host for it).
    ``model`` is a path or a ModelProto of the full converted MoveNet.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model)) if isinstance(model, (str, Path)) else copy.deepcopy(model)
    last_conv = {}  # per head, its last convolution (nodes are in topological order)
    for n in model.graph.node:
        for h in MOVENET_HEADS:
            if n.op_type == "Conv" and f"/{h}/" in n.name:
                last_conv[h] = n.output[0]
    if len(last_conv) != len(MOVENET_HEADS):
        raise ValueError(f"MoveNet heads found: {sorted(last_conv)}, expected {MOVENET_HEADS}")
    heads = [last_conv[h] for h in MOVENET_HEADS]
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) == 4:
            name = node.name + "__scales2"
            model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name))
            node.input[2] = name
            del node.input[3]
    return extract(model, heads)


def extract(model, outputs: list[str]):
    """``input`` -> ``outputs`` subgraph (float NCHW outputs of unknown size get a value_info first)."""
    import onnx
    from onnx import helper

    known = {v.name for v in list(model.graph.value_info) + list(model.graph.output)}
    model.graph.value_info.extend(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, ["n", "c", "h", "w"])
                                  for o in outputs if o not in known)
    net = onnx.utils.Extractor(model).extract_model(["input"], outputs)
    onnx.checker.check_model(net)
    return net


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def person_crops(detector_sm) -> tuple[np.ndarray, list[dict]]:
    """One 256x256 uint8 crop per sample image: the top MoveNet box, squared, x1.25, resized."""
    import tensorflow as tf
    from PIL import Image

    from annotator.estimator import detectors

    det = detectors.MoveNetMultiPose(detector_sm)
    crops, meta = [], []
    for name in CROP_IMAGES:
        image = load_rgb(IMAGES / name)
        boxes = det.detect(tf.constant(image[np.newaxis]), 0.3, 0.7, -1, False)[0].numpy()
        if not len(boxes):
            continue
        x, y, w, h, score = boxes[0]
        side = 1.25 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        crop = Image.fromarray(image).transform((256, 256), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
        crops.append(np.asarray(crop))
        meta.append({"image": name, "box_xywh": [round(float(v), 1) for v in (x, y, w, h)],
                     "score": round(float(score), 3)})
    return np.stack(crops), meta


def movenet_views(image: np.ndarray) -> list[np.ndarray]:
    """The detector's network inputs for ``image`` (``MoveNetMultiPose._detect_view``), uint8 [1,H,W,3]."""
    import tensorflow as tf

    from annotator.estimator import detectors

    img = tf.cast(tf.constant(image), tf.float32)
    hw = tf.cast(tf.shape(img)[:2], tf.float32)
    views = detectors.MoveNetMultiPose.DEFAULT_VIEWS
    largest = max(size / (1.0 + 2.0 * pad) for size, pad in views)
    base_scale = tf.minimum(largest / tf.reduce_max(hw), 1.0)
    base = tf.image.resize(img, tf.maximum(tf.cast(tf.round(hw * base_scale), tf.int32), 1), antialias=True)
    out = []
    for size, pad_fraction in views:
        scale = float(size) / (tf.reduce_max(hw) * (1.0 + 2.0 * pad_fraction))
        new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
        resized = tf.image.resize(base, new_hw, antialias=True)
        pad = tf.cast(tf.round(hw * scale * pad_fraction), tf.int32)
        padded_hw = (new_hw + 2 * pad + 31) // 32 * 32
        padded = tf.image.pad_to_bounding_box(resized, pad[0], pad[1], padded_hw[0], padded_hw[1])
        out.append(tf.cast(tf.round(tf.clip_by_value(padded, 0.0, 255.0)), tf.uint8)[tf.newaxis].numpy())
    return out


def max_diffs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, dict]:
    return {k: {"max_abs_diff": float(np.max(np.abs(ref[k].astype(np.float64) - got[k]))),
                "max_abs_ref": float(np.max(np.abs(ref[k])))} for k in sorted(ref)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / ".gpuproxy")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--skip-convert", action="store_true", help="reuse the .onnx files already in --out")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.out.mkdir(parents=True, exist_ok=True)

    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from annotator.models import registry

    manifest: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "opset": args.opset,
                      "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
                                   "onnx": onnx.__version__, "onnxruntime": ort.__version__},
                      "components": {}}
    sms = {}
    for name in COMPONENTS:
        sm_dir = registry.component_dir(name)
        if not (sm_dir / "saved_model.pb").exists():
            raise SystemExit(f"{sm_dir} missing: run `annotator models build-default` first")
        onnx_path = args.out / f"{name}.onnx"
        entry: dict = {"saved_model": str(sm_dir), "onnx": onnx_path.name}
        if not args.skip_convert:
            entry["convert_seconds"] = round(convert(sm_dir, onnx_path, args.opset), 1)
            entry["rewrites_for_onnx2torch"] = onnx2torch_friendly(onnx_path)
        entry["onnx_bytes"] = onnx_path.stat().st_size
        manifest["components"][name] = entry
        sms[name] = tf.saved_model.load(str(sm_dir))
        print(f"{name}: {onnx_path} ({entry['onnx_bytes'] / 1e6:.1f} MB)", flush=True)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    ref: dict[str, np.ndarray] = {}

    # crop network: real person crops, batch 4 (also proves the dynamic batch axis)
    crops_u8, crop_meta = person_crops(sms["movenet-multipose"])
    crops = crops_u8.astype(np.float32) / 255.0
    tf_out = {k: v.numpy() for k, v in
              sms["blazepose-full"].signatures["serving_default"](input_1=tf.constant(crops)).items()}
    sess = ort.InferenceSession(str(args.out / "blazepose-full.onnx"), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ort_out = dict(zip(names, sess.run(names, {"input_1": crops}), strict=True))
    single = dict(zip(names, sess.run(names, {"input_1": crops[:1]}), strict=True))
    manifest["components"]["blazepose-full"].update(
        input={"name": "input_1", "dtype": "float32", "shape": ["B", 256, 256, 3], "range": "[0,1]"},
        crops=crop_meta,
        tf_vs_onnxruntime=max_diffs(tf_out, ort_out),
        onnxruntime_batch1_vs_batch4=max_diffs({k: v[:1] for k, v in ort_out.items()}, single))
    ref["crops_uint8"] = crops_u8
    for k, v in tf_out.items():
        ref[f"blazepose_tf_{k}"] = v

    # detector: the two default views of a 1088x1920 frame
    views = movenet_views(load_rgb(IMAGES / MOVENET_IMAGE))
    sess = ort.InferenceSession(str(args.out / "movenet-multipose.onnx"), opts, providers=["CPUExecutionProvider"])
    view_diffs = []
    for i, view in enumerate(views):
        x = view.astype(np.int32)
        tf_v = sms["movenet-multipose"].signatures["serving_default"](input=tf.constant(x))["output_0"].numpy()
        ort_v = sess.run(["output_0"], {"input": x})[0]
        view_diffs.append({"shape": list(x.shape), **max_diffs({"output_0": tf_v}, {"output_0": ort_v})["output_0"],
                           "max_abs_diff_person_scores": float(np.max(np.abs(tf_v[0, :, 55] - ort_v[0, :, 55]))),
                           "top_score": float(tf_v[0, 0, 55])})
        ref[f"movenet_view{i}_uint8"] = view
        ref[f"movenet_tf_view{i}"] = tf_v
    # the decode-free network the device half also times: scales-Resize == sizes-Resize
    net = movenet_network(args.out / "movenet-multipose.onnx")
    net_sizes = extract(onnx.load(str(args.out / "movenet-multipose.onnx")), [o.name for o in net.graph.output])
    net_diffs = []
    for view in views:
        x = {"input": view.astype(np.int32)}
        a = ort.InferenceSession(net.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, x)
        b = ort.InferenceSession(net_sizes.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, x)
        net_diffs.append({"shape": list(view.shape), "outputs": [list(o.shape) for o in a],
                          "max_abs_diff": float(max(np.max(np.abs(u - v)) for u, v in zip(a, b, strict=True)))})
    manifest["components"]["movenet-multipose"]["network_only_scales_vs_sizes_resize"] = net_diffs
    manifest["components"]["movenet-multipose"].update(
        input={"name": "input", "dtype": "int32", "shape": [1, "H", "W", 3], "range": "0..255",
               "views_of": MOVENET_IMAGE},
        tf_vs_onnxruntime=view_diffs)

    np.savez_compressed(args.out / "reference.npz", **ref)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
