#!/usr/bin/env bash
# TensorBoard's HParams tab for the smoke study (`tensorboard --logdir <study folder>/runs`), as headless Chromium
# renders it: docs/hparams-smoke-study.png.
# Usage: scripts/hparams_screenshot.sh [STUDY_FOLDER] [OUTPUT_PNG]
#   STUDY_FOLDER: an existing study folder to show; without it the smoke study is run into a temporary one (~1-2 min).
# Needs chromium (Debian: apt-get install -y chromium). PYTHON defaults to the venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUTPUT=${2:-docs/hparams-smoke-study.png}
work=$(mktemp -d)
trap 'kill "${tb_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
folder=${1:-}
if [[ -z $folder ]]; then
    folder=$work/smoke
    "$PYTHON" -m lightning_ae study configs/study/smoke.yaml --folder "$folder" >"$work/study.log" 2>&1 \
        || { cat "$work/study.log"; exit 1; }
fi
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
"$PYTHON" -m tensorboard.main --logdir "$folder/runs" --port "$port" --host localhost >"$work/tensorboard.log" 2>&1 &
tb_pid=$!
for _ in $(seq 60); do  # TensorBoard answers once it has loaded the logdir
    curl -sf "http://localhost:$port/data/plugins_listing" | grep -q '"hparams"' && break
    sleep 1
done
mkdir -p "$(dirname "$OUTPUT")"
# A fresh profile, no network besides localhost, wide enough for the table's columns; the virtual time budget lets
# the dashboard fetch the experiment and its session groups before the shot.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/profile" --window-size=2200,1000 \
    --hide-scrollbars --virtual-time-budget=20000 --screenshot="$(realpath -m "$OUTPUT")" \
    "http://localhost:$port/#hparams" 2>"$work/chromium.log" || { cat "$work/chromium.log"; exit 1; }
echo "wrote $OUTPUT"
