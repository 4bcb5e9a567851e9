#!/usr/bin/env bash
# make gpu-check: every config for one epoch on a CUDA device, each into a temporary log folder.
#
#   - CUDA graphs in the speed path: the tests of tests/test_cuda_graphs.py that need a GPU (capture and
#     replay; the others run in make test), then the basic AE's seconds per epoch with and without;
#   - every fit experiment (its config files, as `make train` and the studies compose them): fit for
#     1 epoch, then test on the best checkpoint (the CLI's default), with every evaluation callback;
#   - a predict on the basic AE's checkpoint (PredictionWriter);
#   - every pre-training pipeline (configs/pretrain.yaml + configs/pretrain_*.yaml, a variant after its
#     activation's file), 1 epoch per stage;
#   - the smoke study (configs/study/smoke.yaml), runs and report.
#
# One line per check (ok or FAILED, seconds), a summary, exit status 1 if any failed (the log of a
# failed check is kept and its tail printed). Refuses with one line, status 2, without a CUDA device.
#
# Environment:
#   PYTHON                   the interpreter (default: .venv/bin/python if present, else python3); lightning_ae
#                            must be importable by it (installed, or on PYTHONPATH)
#   GPU_CHECK_ARGS           appended to every fit and predict, e.g. "--data.train_subset 2000" (default: full data)
#   GPU_CHECK_PRETRAIN_ARGS  appended to every pre-training pipeline, e.g. "--train_subset 2000"
#   GPU_CHECK_ACCELERATOR    gpu (default); "cpu" runs the same checks on the CPU, to try the script itself
#   GPU_CHECK_DIR            the log folder (default: a new temporary folder, removed when every check passed)
#   GPU_CHECK_TIMING_IMAGES  training images for the CUDA-graph timing fits (default: all of them)
set -u
cd "$(dirname "$0")/.." || exit 2

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
ACCELERATOR=${GPU_CHECK_ACCELERATOR:-gpu}
read -r -a FIT_ARGS <<<"${GPU_CHECK_ARGS:-}"
read -r -a PRETRAIN_ARGS <<<"${GPU_CHECK_PRETRAIN_ARGS:-}"

if [ "$ACCELERATOR" = gpu ]; then
    if [ "$("$PYTHON" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)" != True ]; then
        echo "gpu-check: no CUDA device (torch.cuda.is_available() is not True for $PYTHON); nothing was run." >&2
        exit 2
    fi
    DEVICE=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)
else
    DEVICE="$ACCELERATOR (GPU_CHECK_ACCELERATOR)"
fi

if [ -n "${GPU_CHECK_DIR:-}" ]; then
    LOGS=$GPU_CHECK_DIR
    mkdir -p "$LOGS" || exit 2
else
    LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
fi
export PYTHONUNBUFFERED=1

PASSED=0
FAILED=()
START=$(date +%s.%N)
echo "gpu-check on $DEVICE with $PYTHON; logs in $LOGS"

# check NAME EXPECTED_FILE COMMAND...: runs COMMAND (output to LOGS/NAME.log); ok when it exits 0 and,
# when EXPECTED_FILE is not "-", that file exists (for results.json: with status "tested").
check() {
    local name=$1 expected=$2
    shift 2
    local log="$LOGS/$name.log" begin status=0 seconds
    begin=$(date +%s.%N)
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -eq 0 ] && [ "$expected" != - ]; then
        if [ ! -f "$expected" ]; then
            echo "gpu-check: $expected was not written" >>"$log"
            status=1
        elif [ "${expected##*/}" = results.json ] && ! grep -Eq '"status": *"tested"' "$expected"; then
            echo "gpu-check: $expected does not say \"tested\"" >>"$log"
            status=1
        fi
    fi
    seconds=$(awk -v a="$begin" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ "$status" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        printf '%-6s  %-28s %8s s\n' ok "$name" "$seconds"
    else
        FAILED+=("$name")
        printf '%-6s  %-28s %8s s  (exit %s; %s)\n' FAILED "$name" "$seconds" "$status" "$log"
        tail -n 15 "$log" | sed 's/^/        | /'
    fi
}

# CUDA graphs (GroupedSteps' cuda_graphs): the capture-and-replay tests, then 3 epochs of the basic AE with
# and without, SGD (capturable, as the configs' Adam is not) at batch 32. Seconds per epoch: the fastest
# epoch after the first (which holds the warm-up and the capture), clocked after a device synchronize.
EPOCH_TIME='
import sys, time
from functools import partial
import pytorch_lightning as pl, torch
from lightning_ae.data import ImageDataModule
from lightning_ae.models import Autoencoder
from lightning_ae.strategies import GroupedSteps
graphs, accelerator, images = sys.argv[1] == "true", sys.argv[2], int(sys.argv[3]) if sys.argv[3] else None
class Clock(pl.Callback):
    def __init__(self):
        self.seconds = []
    def tick(self):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        return time.perf_counter()
    def on_train_epoch_start(self, trainer, module):
        self.start = self.tick()
    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(self.tick() - self.start)
clock, quiet = Clock(), dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
torch.manual_seed(0)
model = Autoencoder(code_dim=32, optimizer=partial(torch.optim.SGD, lr=1.0))
trainer = pl.Trainer(max_epochs=3, accelerator=accelerator, strategy=GroupedSteps(cuda_graphs=graphs), limit_val_batches=0, callbacks=[clock], **quiet)
trainer.fit(model, datamodule=ImageDataModule(batch_size=32, train_subset=images))
static = trainer.strategy._static
counts = f"{static.captures} captures, {static.replays} replays" if static is not None else "eager"
epochs = ", ".join(f"{s:.2f}" for s in clock.seconds)
loss = trainer.callback_metrics["train/loss"].item()
print(f"cuda_graphs {sys.argv[1]}: {min(clock.seconds[1:]):.3f} s per epoch (epochs {epochs}; {counts}; train/loss {loss:.4f})")
'
check cuda_graphs_tests - "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py -k on_a_gpu
for graphs in true false; do
    check "epoch_time_graphs_$graphs" - "$PYTHON" -c "$EPOCH_TIME" "$graphs" "$ACCELERATOR" "${GPU_CHECK_TIMING_IMAGES:-}"
    grep -h "s per epoch" "$LOGS/epoch_time_graphs_$graphs.log" | sed 's/^/        /'
done

# Every fit experiment: NAME then its config files, in the order they compose (later ones override).
BASIC=configs/basic_ae.yaml
EVALUATION=configs/fragments/evaluation.yaml
DENOISING="$BASIC configs/denoising_ae.yaml"
EXPERIMENTS=(
    "basic_ae $BASIC $EVALUATION"
    "classifier $BASIC configs/classifier.yaml"
    "conv_ae configs/conv_ae.yaml $EVALUATION"
    "deep_ae $BASIC configs/deep_ae.yaml $EVALUATION"
    "denoising_ae $DENOISING $EVALUATION"
    "denoising_block $DENOISING configs/fragments/corruption_block.yaml $EVALUATION"
    "denoising_gaussian $DENOISING configs/fragments/corruption_gaussian.yaml $EVALUATION"
    "denoising_salt_and_pepper $DENOISING configs/fragments/corruption_salt_and_pepper.yaml $EVALUATION"
    "denoising_strokes $DENOISING configs/fragments/corruption_strokes.yaml $EVALUATION"
    "similarity_ae $BASIC configs/similarity_ae.yaml $EVALUATION"
    "similarity_deep_ae $BASIC configs/deep_ae.yaml configs/similarity_ae.yaml configs/similarity_deep_ae.yaml $EVALUATION"
    "sparse_ae $BASIC configs/sparse_ae.yaml $EVALUATION"
)
for experiment in "${EXPERIMENTS[@]}"; do
    read -r name files <<<"$experiment"
    configs=()
    for file in $files; do configs+=(--config "$file"); done
    check "$name" "$LOGS/fit/$name/version_0/results.json" \
        "$PYTHON" -m lightning_ae fit "${configs[@]}" --trainer.max_epochs 1 --trainer.accelerator "$ACCELERATOR" \
        --trainer.logger.init_args.save_dir "$LOGS/fit" --trainer.logger.init_args.name "$name" \
        --trainer.logger.init_args.version 0 "${FIT_ARGS[@]}"
done

# predict on the basic AE's best checkpoint: codes and reconstructions of the test set, to predictions.pt.
best=$(ls "$LOGS"/fit/basic_ae/version_0/checkpoints/best-*.ckpt 2>/dev/null | head -n 1)
check predict_basic_ae "$LOGS/predict/basic_ae/version_0/predictions.pt" \
    "$PYTHON" -m lightning_ae predict --config "$BASIC" --config "$EVALUATION" --ckpt_path "${best:-no best checkpoint of basic_ae}" \
    --trainer.accelerator "$ACCELERATOR" --trainer.logger.init_args.save_dir "$LOGS/predict" \
    --trainer.logger.init_args.name basic_ae --trainer.logger.init_args.version 0 "${FIT_ARGS[@]}"

for config in configs/pretrain_*.yaml; do
    name=$(basename "$config" .yaml)
    files=(--config configs/pretrain.yaml)
    # A variant, pretrain_<activation>_<variant>.yaml, goes after its activation's file.
    activation=${name#pretrain_}
    activation=${activation%%_*}
    [ "configs/pretrain_$activation.yaml" != "$config" ] && files+=(--config "configs/pretrain_$activation.yaml")
    check "$name" "$LOGS/$name/results.json" \
        "$PYTHON" -m lightning_ae pretrain "${files[@]}" --config "$config" --layers.epochs 1 --frozen.epochs 1 --finetune.epochs 1 \
        --accelerator "$ACCELERATOR" --output_dir "$LOGS/$name" "${PRETRAIN_ARGS[@]}"
done

# The study's runs take the accelerator of their configs (auto: the GPU when there is one).
check study_smoke "$LOGS/report/report.md" \
    "$PYTHON" -m lightning_ae study configs/study/smoke.yaml --folder "$LOGS/study" --report "$LOGS/report"

minutes=$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", (b - a) / 60}')
if [ "${#FAILED[@]}" -eq 0 ]; then
    echo "gpu-check: all $PASSED ok in $minutes min on $DEVICE"
    [ -z "${GPU_CHECK_DIR:-}" ] && rm -rf "$LOGS"
    exit 0
fi
echo "gpu-check: ${#FAILED[@]} FAILED (${FAILED[*]}), $PASSED ok, in $minutes min on $DEVICE; logs in $LOGS"
exit 1
