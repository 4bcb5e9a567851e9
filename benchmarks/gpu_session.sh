#!/usr/bin/env bash
# Everything a lent GPU should measure, in one call, in priority order. Run it from the repository root on the
# device machine (DEVELOPERS.md: carrying the wheels the device image lacks):
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh
#
# 1. benchmarks/bench_gpu.py: lightning-ae per epoch against the plain eager and CUDA-graph loops, a whole
#    CLI fit, and make train's evaluation share;
# 2. the tests that need a GPU (CUDA-graph capture and replay, t-SNE on the device), alone on the card;
# 3. make gpu-check: every config for 1 epoch (GPU_CHECK_ARGS' subset), predict, the pipelines, the smoke study;
# 4. the homework study (configs/study/homework.yaml, full data), one process, until the time is up: each
#    finished run's results.json holds its wall time on a lone card.
#
# The device tool brings back only a few files from $OUT, so it gets three: summary.txt, bench_gpu.json and
# session.tgz (every log and results.json), the archive remade after each step (a cut-off call keeps it).
# Session 7 learnt: processes sharing one GPU time-slice it (8 study shards ran each epoch 10-20x slower), so
# nothing here runs beside anything else.
#
# Environment: OUT (default /tmp/gpu-session), PYTHON (python3), GPU_SESSION_SECONDS (540: all of it); to try
# the script on the CPU: GPU_SESSION_BENCH_ARGS (default "--epochs 5"), GPU_SESSION_STUDY
# (configs/study/homework.yaml), GPU_CHECK_ACCELERATOR=cpu.
set -u
OUT=${OUT:-/tmp/gpu-session}
PYTHON=${PYTHON:-python3}
STUDY=${GPU_SESSION_STUDY:-configs/study/homework.yaml}
read -r -a BENCH_ARGS <<<"${GPU_SESSION_BENCH_ARGS:---epochs 5}"
DEADLINE=$(($(date +%s) + ${GPU_SESSION_SECONDS:-540}))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
STUDY_FOLDER=$WORK/study
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
left() { echo $((DEADLINE - $(date +%s))); }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
pack() {  # every log and the study's results, in one archive (replaced, never half-written)
    tar czf "$OUT/session.tgz.part" -C "$WORK" --exclude='*.ckpt' --exclude='events.out.*' --exclude='codes' --exclude='*.png' --exclude='*.pt' . 2>/dev/null
    mv "$OUT/session.tgz.part" "$OUT/session.tgz"
}

# step NAME SECONDS COMMAND...: runs COMMAND for at most SECONDS (never past the deadline), logs to WORK/NAME.log.
step() {
    local name=$1 limit=$2 begin status
    shift 2
    [ "$limit" -gt "$(($(left) - 10))" ] && limit=$(($(left) - 10))
    if [ "$limit" -le 5 ]; then
        note "$name: skipped, no time left"
        return
    fi
    begin=$(date +%s)
    timeout -k 20 "$limit" "$@" >"$WORK/$name.log" 2>&1
    status=$?
    note "$name: exit $status in $(($(date +%s) - begin)) s (limit $limit s): $(tail -n 1 "$WORK/$name.log" | cut -c1-200)"
    pack
}

nvidia-smi >"$WORK/nvidia-smi.txt" 2>&1
note "gpu-session on $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device", "torch", torch.__version__)')," \
    "$(nproc) CPU cores, $(date -u +%FT%TZ)"

step bench_gpu 240 "$PYTHON" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}"
cp benchmarks/results/bench_gpu*.json "$OUT/" 2>/dev/null
step gpu_tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_tsne.py -k on_a_gpu
GPU_CHECK_DIR=$WORK/gpu-check GPU_CHECK_TIMING_IMAGES=${GPU_CHECK_TIMING_IMAGES:-5000} \
    GPU_CHECK_ARGS="${GPU_CHECK_ARGS:---data.train_subset 2000}" \
    GPU_CHECK_PRETRAIN_ARGS="${GPU_CHECK_PRETRAIN_ARGS:---train_subset 2000}" PYTHON=$PYTHON \
    step gpu_check 300 bash scripts/gpu_check.sh
# SIGTERM at the deadline: the run in progress saves last.ckpt and stops (exit 143); finished runs are kept.
step study 100000 "$PYTHON" -m lightning_ae study "$STUDY" --folder "$STUDY_FOLDER" --report "$WORK/study-report"
step study_state 30 "$PYTHON" -m lightning_ae study "$STUDY" --folder "$STUDY_FOLDER" --dry-run
note "done with $(left) s to spare"
