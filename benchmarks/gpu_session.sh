#!/usr/bin/env bash
# Everything a lent GPU should measure, in one call, in priority order, each step's log under $OUT
# (what a timed-out call still brings back). Run it from the repository root on the device machine:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh
#
# 1. benchmarks/bench_gpu.py: lightning-ae per epoch against the plain eager and CUDA-graph loops, a whole
#    CLI fit, and make train's evaluation share (issue 14's rows);
# 2. then all at once, sharing the card: the homework study (configs/study/homework.yaml, every run, full
#    data) as GPU_SESSION_SHARDS shards, its wall time, its runs' results.json and its report; the tests that
#    need a GPU (CUDA-graph capture and replay, t-SNE on the device); make gpu-check (every config, 1 epoch,
#    on GPU_CHECK_ARGS' subset). What runs beside the study slows it down, never speeds it up.
#
# Environment: OUT (default /tmp/gpu-session), PYTHON (python3), GPU_SESSION_SECONDS (540: all of it),
# GPU_SESSION_SHARDS (8); to try the script on the CPU: GPU_SESSION_BENCH_ARGS (default "--epochs 5"),
# GPU_SESSION_STUDY (configs/study/homework.yaml), GPU_CHECK_ACCELERATOR=cpu.
set -u
OUT=${OUT:-/tmp/gpu-session}
PYTHON=${PYTHON:-python3}
SHARDS=${GPU_SESSION_SHARDS:-8}
STUDY=${GPU_SESSION_STUDY:-configs/study/homework.yaml}
read -r -a BENCH_ARGS <<<"${GPU_SESSION_BENCH_ARGS:---epochs 5}"
DEADLINE=$(($(date +%s) + ${GPU_SESSION_SECONDS:-540}))
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
left() { echo $((DEADLINE - $(date +%s))); }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }

# step NAME SECONDS COMMAND...: runs COMMAND for at most SECONDS (and never past the deadline).
step() {
    local name=$1 limit=$2 begin status
    shift 2
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    if [ "$limit" -le 5 ]; then
        note "$name: skipped, no time left"
        return
    fi
    begin=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    status=$?
    note "$name: exit $status in $(($(date +%s) - begin)) s (limit $limit s)"
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
note "gpu-session on $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device", "torch", torch.__version__)')," \
    "$(nproc) CPU cores, $(date -u +%FT%TZ)"

step bench_gpu 220 "$PYTHON" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}"
cp benchmarks/results/bench_gpu*.json "$OUT/" 2>/dev/null
# The rest at once: the study's shards, the GPU tests and gpu-check share the card and the CPU cores (the
# study's wall time can only be longer for it).
HOMEWORK=/tmp/gpu-session-homework
begin=$(date +%s)
pids=()
for shard in $(seq 1 "$SHARDS"); do
    timeout $(($(left) - 25)) "$PYTHON" -m lightning_ae study "$STUDY" --shard "$shard/$SHARDS" \
        --folder "$HOMEWORK" --report "$HOMEWORK-report-$shard" >"$OUT/homework_shard_$shard.log" 2>&1 &
    pids+=($!)
done
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_tsne.py -k on_a_gpu \
    >"$OUT/gpu_tests.log" 2>&1 &
tests=$!
GPU_CHECK_DIR=/tmp/gpu-session-check GPU_CHECK_TIMING_IMAGES=${GPU_CHECK_TIMING_IMAGES:-5000} GPU_CHECK_ARGS="${GPU_CHECK_ARGS:---data.train_subset 2000}" \
    GPU_CHECK_PRETRAIN_ARGS="${GPU_CHECK_PRETRAIN_ARGS:---train_subset 2000}" PYTHON=$PYTHON \
    timeout $(($(left) - 80)) bash scripts/gpu_check.sh >"$OUT/gpu_check.log" 2>&1 &
check=$!
wait "$tests"
note "gpu tests: exit $? ($(tail -n 1 "$OUT/gpu_tests.log"))"
statuses=()
for pid in "${pids[@]}"; do
    wait "$pid"
    statuses+=($?)
done
note "study $STUDY: $SHARDS shards, exit statuses ${statuses[*]}, wall $(($(date +%s) - begin)) s"
wait "$check"
note "gpu-check: exit $? ($(tail -n 1 "$OUT/gpu_check.log"))"
mkdir -p "$OUT/homework_runs"
for results in "$HOMEWORK"/*/results.json "$HOMEWORK"/*/*/results.json; do
    [ -f "$results" ] || continue
    run=${results#"$HOMEWORK"/}
    cp "$results" "$OUT/homework_runs/${run//\//__}"
done
runs=$(ls "$OUT/homework_runs" | wc -l)
total=$("$PYTHON" -m lightning_ae study "$STUDY" --folder "$HOMEWORK" --dry-run 2>/dev/null | grep -c '^\[')
note "study runs with results.json: $runs of $total"
if [ "$runs" -eq "$total" ]; then  # every run done: the study only writes its report
    step study_report 60 "$PYTHON" -m lightning_ae study "$STUDY" --folder "$HOMEWORK" --report "$OUT/study_report"
else
    step study_state 20 "$PYTHON" -m lightning_ae study "$STUDY" --folder "$HOMEWORK" --dry-run
fi
note "done with $(left) s to spare"
