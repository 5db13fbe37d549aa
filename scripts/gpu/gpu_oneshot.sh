#!/usr/bin/env bash
# The one-shot search's GPU part (issue 38): the default CIFAR-10 study as a one-shot study on the device.
# The first worker trains the residual and inverted supernets by the sandwich rule (bf16 autocast on CUDA,
# the teacher's cached logits) for EPOCHS epochs on all 45,000 training images, then WORKERS processes
# evaluate subnets until TRIALS are done or the deadline, and `kdsearch export --knee` writes the knee
# subnet's verified ONNX file. No promotion (--promote 0): the front is the subnets' inherited-weight
# accuracy. Resumable: a supernet continues from its last finished epoch, evaluated subnets are kept; the
# run folder's small files come back as OUTDIR/run.tar.gz (study.db, run.json, the teacher's metadata).
#   bash scripts/gpu/gpu_oneshot.sh OUTDIR [SECONDS]        # SECONDS: this script's budget (default 300)
# Knobs (environment): STUDY, RUN, EPOCHS, TRIALS, WORKERS, DEVICE, EXTRA (more `run` options).
# Dry run on a CPU (checks the script, not speed):
#   DEVICE=cpu STUDY=studies/digits-demo.toml EPOCHS=1 TRIALS=8 WORKERS=2 RUN=/tmp/dry-oneshot \
#     EXTRA="--subset 400" bash scripts/gpu/gpu_oneshot.sh /tmp/dry-oneshot-out 900
set -uo pipefail
OUTDIR=${1:?usage: gpu_oneshot.sh OUTDIR [SECONDS]}
BUDGET=${2:-300}
PY=${PYTHON:-python3}
KD="$PY -m kdsearch"
STUDY=${STUDY:-studies/cifar10-resnet32.toml}
RUN=${RUN:-results/cifar10-resnet32-oneshot-gpu}   # not the CPU one-shot run's folder: another study
EPOCHS=${EPOCHS:-30}
TRIALS=${TRIALS:-2000}
WORKERS=${WORKERS:-4}
DEVICE=${DEVICE:-cuda}
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start) - 30)); }   # 30 s kept for the export and the archive
mkdir -p "$OUTDIR"

t=$(left)
echo "== $(date -u +%T): one-shot study, ${t}s left"
# SIGINT at the deadline: a supernet keeps its last finished epoch, evaluated subnets are recorded
timeout -s INT "$t" $KD run "$STUDY" --strategy oneshot --epochs "$EPOCHS" --trials "$TRIALS" --promote 0 \
  --subset 0 --device "$DEVICE" --workers "$WORKERS" --run-dir "$RUN" ${EXTRA:-} > "$OUTDIR/oneshot.log" 2>&1
echo "run exit $?"
$KD status "$RUN" > "$OUTDIR/status.log" 2>&1
$KD export "$RUN" --knee --out "$OUTDIR/export" > "$OUTDIR/export.log" 2>&1; echo "export exit $?"
tar czf "$OUTDIR/run.tar.gz" --exclude='logits' --exclude='trials' --exclude='supernets' "$RUN"
tail -n 20 "$OUTDIR/oneshot.log"
echo "== done, $(left)s left"
