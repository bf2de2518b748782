"""GPU proxy benchmark, device half: time the default model's two networks in PyTorch on a GPU.

Runs with a plain ``python3`` that has what ``requirements-device.txt`` names (torch with CUDA,
onnx, onnx2torch; onnxruntime is optional, used for a CPU cross-check). It reads what
``gpu_proxy.py`` wrote (``--models``, default ``.gpuproxy/``): ``blazepose-full.onnx``,
``movenet-multipose.onnx`` and ``reference.npz`` (real inputs with TensorFlow's outputs on them),
and imports ``gpu_proxy.py`` (numpy + onnx only) to cut MoveNet's decode-free network.

Measures network forward passes only (inputs already on the device, outputs left there; timed with
``torch.cuda.synchronize`` around the loop, after warm-up, median of ``--repeats`` timed runs of
>= ``--min-time`` seconds each; ``torch.backends.cudnn.benchmark`` on). Models:

- ``blazepose-full`` (the crop network, [B,256,256,3] float32): crops/s at each ``--batch-sizes``
  (default 1, 8, 12, 60, 64, 256; 12 and 60 are the alignment and augmentation batches the default
  model uses: ``internal_batch_size 64 // num_aug 5`` = 12 boxes per chunk, 5 x 12 = 60 crops);
- ``movenet-multipose`` (the detector, full graph with its decode, [1,H,W,3] int32): batch 1 only
  (the graph squeezes the batch axis), at the two default views of a 1088x1920 frame
  ([1,256,160,3] and [1,512,320,3]);
- ``movenet-network``: the same detector without its decode (input -> the 6 head convolutions,
  ``gpu_proxy.movenet_network``), same inputs: what the GPU spends on the convolutions.

Modes: ``fp32`` (TF32 off: true float32, as TF on the CPU), ``tf32`` (PyTorch's default for cuDNN
convolutions: TF32 tensor cores), ``fp16_autocast`` (``torch.autocast(float16)``), ``fp16_half``
(BlazePose only: weights and input cast once to float16), and ``cudagraph_<mode>``: the same
replayed from a captured CUDA graph (no Python/launch overhead, which dominates eager onnx2torch at
small batches). onnx2torch reads some shape constants (Reshape/Pad/Resize arguments) with
``.tolist()``: these are kept on the CPU (``pin_shape_constants``) so the eager loop does not wait
for the GPU at each of them and the graph can be captured; the full MoveNet graph still computes
shapes on the GPU (eager only). Also: GPU utilisation and memory from ``nvidia-smi -lms 100``
during each timed loop (coarse), faithfulness (max abs difference of every mode's outputs against
TensorFlow's, computed on the CPU by the local half, and against onnxruntime's CPU outputs here),
and a derived network-only time per image for one person per image: MoveNet 256 view + 512 view
+ 1 alignment crop (at batch 12) + 5 augmented crops (at batch 60), sequential.

Does NOT measure TensorFlow itself, decoding, the detector views' resize/letterbox, the crop warp,
NMS, reconstruction, filters, host<->device copies or the pipeline: an upper bound for what the
networks allow. Without CUDA it runs on the CPU, says so (``"cuda": false``) and runs ``fp32`` only.

    python3 -m pip install -r bench/experimental/requirements-device.txt
    python3 bench/experimental/gpu_proxy_device.py --models .gpuproxy --out /tmp/gpuproxy   # gpu_proxy.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_proxy  # noqa: E402

BLAZEPOSE = "blazepose-full"
MOVENET = "movenet-multipose"
MOVENET_NET = "movenet-network"
# onnx2torch modules that read these argument positions on the host (.tolist(), torch.Size(...))
SHAPE_ARGS = {"OnnxReshape": {1}, "OnnxPadDynamic": {1, 2}, "OnnxResize": {1, 2, 3}}


def log(msg: str) -> None:
    print(f"[gpu_proxy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def shape_constants(gm) -> list[str]:
    """Buffers of an onnx2torch GraphModule used only as host-read shape arguments."""
    mods = dict(gm.named_modules())
    names = []
    for node in gm.graph.nodes:
        if node.op != "get_attr" or not node.users:
            continue
        ok = True
        for user in node.users:
            kind = type(mods.get(user.target)).__name__ if user.op == "call_module" else None
            positions = {i for i, a in enumerate(user.args) if a is node}
            if kind not in SHAPE_ARGS or not positions or not positions <= SHAPE_ARGS[kind] \
                    or any(v is node for v in user.kwargs.values()):
                ok = False
        if ok:
            names.append(node.target)
    return names


def pin_shape_constants(gm, names: list[str], cpu_values: dict) -> None:
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if attr in owner._buffers:
            owner._buffers[attr] = cpu_values[name]
        else:
            setattr(owner, attr, cpu_values[name])


def load(proto, dev):
    """onnx2torch module on ``dev`` with its host-read shape constants left on the CPU."""
    import onnx2torch

    gm = onnx2torch.convert(proto).eval()
    names = shape_constants(gm)
    cpu_values = {n: gm.get_buffer(n).detach().clone() for n in names}
    gm = gm.to(dev)
    pin_shape_constants(gm, names, cpu_values)
    return gm, len(names)


class SmiSampler:
    """``nvidia-smi`` in loop mode while the block runs: utilisation % and memory MiB samples."""

    def __init__(self, enabled: bool, period_ms: int = 100):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.period_ms = period_ms
        self.proc = None
        self.result: dict | None = None

    def __enter__(self):
        if self.enabled:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", str(self.period_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return False
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        util, mem = [], []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            try:
                util.append(float(parts[0]))
                mem.append(float(parts[1]))
            except (IndexError, ValueError):
                continue
        if util:
            # the first sample often predates the loop: drop it when there are others
            u = util[1:] if len(util) > 2 else util
            self.result = {"samples": len(u), "util_mean": round(statistics.mean(u), 1), "util_max": max(u),
                           "mem_used_mib_max": max(mem)}
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path(".gpuproxy"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "."))
    ap.add_argument("--batch-sizes", default="1,8,12,60,64,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.15, help="seconds per timed run (at least)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime CPU cross-check")
    ap.add_argument("--device", default=None, help="force a torch device (default: cuda if available)")
    args = ap.parse_args()
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)

    import onnx
    import torch

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = True
    env = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
           "onnx2torch": metadata.version("onnx2torch"), "cuda": cuda, "device": str(dev), "cudnn_benchmark": True,
           "default_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
           "default_cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   sm_count=props.multi_processor_count, torch_cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
    else:
        env["warning"] = "CUDA not used: CPU run, numbers are NOT GPU numbers; fp32 only"
    log(f"env {env}")
    result: dict = {"env": env, "args": {k: str(v) for k, v in vars(args).items()}}

    def save():
        result["seconds"] = round(time.time() - started, 1)
        (args.out / "gpu_proxy.json").write_text(json.dumps(result, indent=2))

    # ---------------------------------------------------------------- models and inputs
    ref = np.load(args.models / "reference.npz")
    protos = {BLAZEPOSE: onnx.load(str(args.models / f"{BLAZEPOSE}.onnx")),
              MOVENET: onnx.load(str(args.models / f"{MOVENET}.onnx"))}
    protos[MOVENET_NET] = gpu_proxy.movenet_network(protos[MOVENET])
    models, out_names, pinned = {}, {}, {}
    for name, proto in protos.items():
        t0 = time.time()
        out_names[name] = [o.name for o in proto.graph.output]
        models[name], pinned[name] = load(proto, dev)
        log(f"{name}: onnx2torch {time.time() - t0:.1f}s, {len(out_names[name])} outputs, "
            f"{pinned[name]} shape constants kept on the CPU")
    env["shape_constants_on_cpu"] = pinned
    halves = {BLAZEPOSE: copy.deepcopy(models[BLAZEPOSE]).half()} if cuda else {}

    crops_np = ref["crops_uint8"].astype(np.float32) / 255.0
    crops = torch.from_numpy(crops_np).to(dev)
    views = [ref[f"movenet_view{i}_uint8"].astype(np.int32) for i in range(2)]
    view_keys = ["x".join(map(str, v.shape)) for v in views]
    view_t = [torch.from_numpy(v).to(dev) for v in views]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward(name, x, mode):
        """One forward pass in ``mode`` (fp32 | tf32 | fp16_autocast | fp16_half), outputs by name."""
        if cuda:
            torch.backends.cudnn.allow_tf32 = mode == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        with torch.inference_mode():
            if mode == "fp16_autocast":
                with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                    outs = models[name](x)
            elif mode == "fp16_half":
                outs = halves[name](x)
            else:
                outs = models[name](x)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return dict(zip(out_names[name], outs, strict=True))

    def prepare(name, x, mode):
        """A no-argument callable running ``mode`` on ``x``; ``cudagraph_<m>`` captures ``m`` first."""
        base = mode.removeprefix("cudagraph_")
        if base == "fp16_half":
            x = x.half()
        if not mode.startswith("cudagraph_"):
            return lambda: forward(name, x, base)
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                forward(name, static_x, base)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward(name, static_x, base)
        return graph.replay

    def to_np(outs):
        return {k: v.detach().float().cpu().numpy() for k, v in outs.items()}

    def diffs(a, b):
        return {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in sorted(a)}

    def timeit(fn):
        for _ in range(args.warmup):
            fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        one = max(time.perf_counter() - t0, 1e-6)
        n = max(1, math.ceil(args.min_time / one))
        per_call = []
        with SmiSampler(cuda) as smi:
            for _ in range(args.repeats):
                sync()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                sync()
                per_call.append((time.perf_counter() - t0) / n)
        return {"median_ms": round(1e3 * statistics.median(per_call), 4), "min_ms": round(1e3 * min(per_call), 4),
                "max_ms": round(1e3 * max(per_call), 4), "calls_per_run": n, "runs": len(per_call),
                "nvidia_smi": smi.result}

    eager = ["fp32", "tf32", "fp16_autocast"] if cuda else ["fp32"]
    modes = {BLAZEPOSE: eager + (["fp16_half", "cudagraph_fp32", "cudagraph_tf32", "cudagraph_fp16_half"]
                                 if cuda else []),
             MOVENET: eager[:1] + (["fp16_autocast"] if cuda else []),
             MOVENET_NET: eager + (["cudagraph_fp32", "cudagraph_tf32", "cudagraph_fp16_autocast"] if cuda else [])}

    # ---------------------------------------------------------------- faithfulness
    ort = None
    if not args.no_ort:
        try:
            import onnxruntime as ort

            env["onnxruntime"] = ort.__version__
        except Exception as e:  # optional
            env["onnxruntime"] = f"unavailable: {e!r}"
            ort = None

    def ort_run(name, feeds):
        sess = ort.InferenceSession(protos[name].SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(out_names[name], sess.run(out_names[name], feeds), strict=True))

    check: dict = {}

    def check_blazepose():
        c = check[BLAZEPOSE] = {"inputs": f"{len(crops_np)} real person crops, 256x256"}
        tf_bp = {k: ref[f"blazepose_tf_{k}"] for k in out_names[BLAZEPOSE]}
        c["max_abs_tf"] = {k: float(np.max(np.abs(v))) for k, v in tf_bp.items()}
        ort_bp = ort_run(BLAZEPOSE, {"input_1": crops_np}) if ort else None
        if ort_bp:
            c["onnxruntime_cpu_vs_tf"] = diffs(tf_bp, ort_bp)
        for m in [m for m in modes[BLAZEPOSE] if not m.startswith("cudagraph_")]:
            got = to_np(forward(BLAZEPOSE, crops.half() if m == "fp16_half" else crops, m))
            c[f"torch_{m}_vs_tf"] = diffs(tf_bp, got)
            if ort_bp:
                c[f"torch_{m}_vs_onnxruntime_cpu"] = diffs(ort_bp, got)

    def check_movenet(i, key, v):
        c = check[f"{MOVENET}_{key}"] = {}
        tf_mn = {"output_0": ref[f"movenet_tf_view{i}"]}
        c["top_person_score_tf"] = float(tf_mn["output_0"][0, 0, 55])
        ort_mn = ort_run(MOVENET, {"input": v}) if ort else None
        if ort_mn:
            c["onnxruntime_cpu_vs_tf"] = diffs(tf_mn, ort_mn)
        for m in modes[MOVENET]:
            got = to_np(forward(MOVENET, view_t[i], m))
            c[f"torch_{m}_vs_tf"] = diffs(tf_mn, got)
            c[f"torch_{m}_person_scores_vs_tf"] = float(np.max(np.abs(got["output_0"][0, :, 55]
                                                                      - tf_mn["output_0"][0, :, 55])))
            if ort_mn:
                c[f"torch_{m}_vs_onnxruntime_cpu"] = diffs(ort_mn, got)

    def check_network(i, key, v):
        c = check[f"{MOVENET_NET}_{key}"] = {}
        ort_net = ort_run(MOVENET_NET, {"input": v}) if ort else None
        if ort_net:
            c["max_abs_onnxruntime_cpu"] = max(float(np.max(np.abs(o))) for o in ort_net.values())
            for m in [m for m in modes[MOVENET_NET] if not m.startswith("cudagraph_")]:
                got = to_np(forward(MOVENET_NET, view_t[i], m))
                c[f"torch_{m}_vs_onnxruntime_cpu"] = max(diffs(ort_net, got).values())

    checks = [(BLAZEPOSE, check_blazepose, ())]
    for i, (key, v) in enumerate(zip(view_keys, views, strict=True)):
        checks += [(f"{MOVENET}_{key}", check_movenet, (i, key, v)),
                   (f"{MOVENET_NET}_{key}", check_network, (i, key, v))]
    for label, fn, fn_args in checks:
        try:
            fn(*fn_args)
        except Exception as e:
            check.setdefault(label, {})["error"] = repr(e)[:300]
            log(f"check {label}: {e!r}")
    result["faithfulness"] = check
    log(f"faithfulness {json.dumps(check)}")
    save()

    # ---------------------------------------------------------------- timing
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    timings: dict = {BLAZEPOSE: {}, MOVENET: {"note": "batch 1 only: the graph squeezes the batch axis"},
                     MOVENET_NET: {"note": "batch 1 (as the detector runs it); decode excluded"}}
    result["timings"] = timings

    def bench(name, m, key, x, count):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        try:
            t = timeit(prepare(name, x, m))
        except Exception as e:
            timings[name][f"{m}_{key}"] = {"error": repr(e)[:300]}
            log(f"{name} {m} {key}: {e!r}")
            return
        t.update(mode=m, input=key, per_s=round(count / (t["median_ms"] / 1e3), 1))
        if cuda:
            t["torch_peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        timings[name][f"{m}_{key}"] = t
        log(f"{name} {m} {key}: {t['median_ms']:.3f} ms -> {t['per_s']:.1f}/s (smi {t['nvidia_smi']})")

    def bench_blazepose(mode_list):
        for m in mode_list:
            for b in batch_sizes:
                bench(BLAZEPOSE, m, f"b{b}", crops.repeat(-(-b // len(crops)), 1, 1, 1)[:b].contiguous(), b)
            save()

    def bench_movenet(name, mode_list):
        for m in mode_list:
            for key, x in zip(view_keys, view_t, strict=True):
                bench(name, m, key, x, 1)
            save()

    # eager first; CUDA-graph captures after, so a refused capture cannot spoil the eager numbers
    bench_blazepose([m for m in modes[BLAZEPOSE] if not m.startswith("cudagraph_")])
    bench_movenet(MOVENET, modes[MOVENET])
    bench_movenet(MOVENET_NET, [m for m in modes[MOVENET_NET] if not m.startswith("cudagraph_")])
    bench_blazepose([m for m in modes[BLAZEPOSE] if m.startswith("cudagraph_")])
    bench_movenet(MOVENET_NET, [m for m in modes[MOVENET_NET] if m.startswith("cudagraph_")])

    # ---------------------------------------------------------------- derived per-image estimate
    def ms(name, key):
        return timings[name].get(key, {}).get("median_ms")

    est = {"note": "network time only, 1 person per image, default settings: 2 MoveNet views (batch 1) + "
                   "1 alignment crop (batch 12) + 5 augmented crops (batch 60); sequential, no overlap"}
    for m in modes[BLAZEPOSE]:
        b12, b60 = ms(BLAZEPOSE, f"{m}_b12"), ms(BLAZEPOSE, f"{m}_b60")
        if b12 is None or b60 is None:
            continue
        crops_ms = b12 / 12 + 5 * b60 / 60
        net_mode = m.replace("fp16_half", "fp16_autocast")
        for det_name, det_mode in ((MOVENET, "fp32"), (MOVENET_NET, net_mode)):
            det = [ms(det_name, f"{det_mode}_{k}") for k in view_keys]
            if None in det:
                continue
            total = sum(det) + crops_ms
            est[f"crops_{m}__{det_name}_{det_mode}"] = {
                "detector_ms": round(sum(det), 4), "crops_ms_per_person": round(crops_ms, 4),
                "total_ms_per_image": round(total, 4), "images_per_s": round(1e3 / total, 1)}
    result["per_image_estimate_1_person"] = est
    save()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
