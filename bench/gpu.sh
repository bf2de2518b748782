#!/usr/bin/env bash
# GPU benchmark in one prepared script (a machine with an NVIDIA GPU, its driver and package access):
# installs the GPU build (tensorflow[and-cuda]), checks TensorFlow sees the GPU, that memory growth is
# on and that the model allocates there, runs the estimator-vs-networks, batching and pipeline
# benchmarks on it while nvidia-smi samples utilisation, and prints one summary.
# About 5-10 minutes on one GPU. Results: bench/results/*_gpu.json, bench/results/gpu_util.csv.
#
#   bash bench/gpu.sh                 # everything
#   SKIP_SETUP=1 bash bench/gpu.sh    # reuse an existing GPU environment
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p bench/results
command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: no NVIDIA driver here" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "${SKIP_SETUP:-0}" != "1" ]; then
  ANNOTATOR_GPU=1 bash setup.sh
fi
.venv/bin/python - <<'EOF'
# the GPU is seen, memory growth is on as in every inference actor, and the model really runs there
import numpy as np
import tensorflow as tf
from annotator.pipeline.infer import enable_gpu_memory_growth
from annotator.models import registry
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", gpus)
assert gpus, "TensorFlow does not see the GPU (CUDA libraries from tensorflow[and-cuda] missing?)"
assert enable_gpu_memory_growth(), "memory growth could not be enabled"
assert all(tf.config.experimental.get_memory_growth(g) for g in gpus)
model = tf.saved_model.load(str(registry.model_dir("default")))
model.detect_poses(tf.constant(np.full((1088, 1920, 3), 128, np.uint8)))
info = tf.config.experimental.get_memory_info("GPU:0")
print("GPU memory after one call: current %.0f MiB, peak %.0f MiB (grown on demand, not the whole card)"
      % (info["current"] / 2**20, info["peak"] / 2**20))
assert info["peak"] > 0, "nothing was allocated on the GPU: the model ran on the CPU"
EOF

marks=bench/results/gpu_marks.txt
: > "$marks"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
  > bench/results/gpu_util.csv &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT

echo "estimator_start $(date +%s.%N)" >> "$marks"
.venv/bin/python bench/estimator.py --images 32 --batch-size 16 --out bench/results/estimator_gpu.json
echo "estimator_end $(date +%s.%N)" >> "$marks"
echo "batching_start $(date +%s.%N)" >> "$marks"
.venv/bin/python bench/batching.py --images 32 --batch-sizes 1,4,8,16,32 --num-aug 1,5 \
  --out bench/results/batching_gpu.json
echo "batching_end $(date +%s.%N)" >> "$marks"
echo "pipeline_start $(date +%s.%N)" >> "$marks"
.venv/bin/python bench/pipeline.py --images 256 --batch-size 16 --gpus-per-actor 1 \
  --out bench/results/pipeline_gpu.json
echo "pipeline_end $(date +%s.%N)" >> "$marks"
kill $smi 2>/dev/null || true

.venv/bin/python - <<'EOF'
import csv, datetime as dt, json
marks = dict(line.split() for line in open("bench/results/gpu_marks.txt"))
rows = []
for r in csv.reader(open("bench/results/gpu_util.csv")):
    t = dt.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
    rows.append((t, float(r[1]), float(r[2])))
def window(a, b):
    sel = [u for t, u, _ in rows if float(marks[a]) <= t <= float(marks[b])]
    return round(sum(sel) / len(sel), 1) if sel else None
p = json.load(open("bench/results/pipeline_gpu.json"))
b = json.load(open("bench/results/batching_gpu.json"))
print("\nGPU utilisation: batching %s %%, whole pipeline benchmark %s %%"
      % (window("batching_start", "batching_end"), window("pipeline_start", "pipeline_end")))
print("pipeline/bare %.3f  pipeline/naive %.3f  bare %.1f img/s  pipeline %.1f img/s"
      % (p["ratios"]["pipeline_over_bare"], p["ratios"]["pipeline_over_naive"],
         p["bare"]["images_per_second"], p["pipeline"]["images_per_second"]))
e = json.load(open("bench/results/estimator_gpu.json"))
print("estimator/networks %.2f (GPU utilisation during it %s %%)"
      % (e["estimator_over_networks"], window("estimator_start", "estimator_end")))
best = max((r for r in b["runs"] if r["mode"] == "batched"), key=lambda r: r["images_per_second"])
print("best batched: B=%d num_aug=%d %.1f img/s (x%.2f vs per-image)"
      % (best["batch_size"], best["num_aug"], best["images_per_second"], best["gain"]))
EOF
