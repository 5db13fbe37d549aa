#!/usr/bin/env bash
# The CIFAR-10 answer's GPU part (issue 17): the students of results/cifar10-resnet32-v2 (its search,
# fine-tuned ResNet-32 teacher and picks at 1/100, 1/30 and 1/10 of the teacher's parameters) retrained
# for 200 epochs on the device, every arm and seed side by side (--jobs), the smallest student first,
# inside a deadline. Its own run folder (a copy of the v2 run's study and teacher: the same trials, the
# same teacher, no new search), so the CPU run's 50-epoch results stay as they are. Resumable model by
# model, and from a model's last saved epoch: what a lease does not finish, the next one continues (the
# run folder's small files come back as OUTDIR/run.tar.gz, with the checkpoints of models in progress).
#   bash scripts/gpu/gpu_final.sh OUTDIR [SECONDS]        # SECONDS: this script's budget (default 300)
# Knobs (environment): SRC, RUN, EPOCHS, SEEDS, VIEWS, JOBS, PARAMS, DEVICE, LRS (the lr choice's `train` options;
# empty: train's default probes; VIEWS empty: train's own choice of views), EXTRA (more `train` options).
# The default study's run's final training (results/cifar10-resnet32-v4.sh's, on the device; in its own folder,
# with the hand-written references beside each student, as that script trains them; v3's picks are the same):
#   SRC=results/cifar10-resnet32-v4 RUN=results/cifar10-resnet32-v4 EPOCHS=50 VIEWS= LRS= EXTRA=--no-baseline \
#     bash scripts/gpu/gpu_final.sh OUTDIR 540
# The CPU one-shot run's picks (issue 38's quality comparison; it has no subnet within 1/100), from scratch with the
# references beside them, then fine-tuned from their inherited weights (extracted again from the committed supernet):
#   SRC=results/cifar10-resnet32-oneshot RUN=results/cifar10-resnet32-oneshot PARAMS="15472 46415" EPOCHS=50 VIEWS= \
#     LRS= EXTRA=--no-baseline bash scripts/gpu/gpu_final.sh OUTDIR 540
#   ... EPOCHS=10 EXTRA="--no-baseline --inherit" bash scripts/gpu/gpu_final.sh OUTDIR 300
# Dry run on a CPU: DEVICE=cpu EPOCHS=5 VIEWS=1 JOBS=1 PARAMS=4642 SEEDS=0 EXTRA=--subset RUN=/tmp/dry bash ... OUT 900
set -uo pipefail
OUTDIR=${1:?usage: gpu_final.sh OUTDIR [SECONDS]}
BUDGET=${2:-300}
PY=${PYTHON:-python3}
KD="$PY -m kdsearch"
SRC=${SRC:-results/cifar10-resnet32-v2}
RUN=${RUN:-results/cifar10-resnet32-e200}
EPOCHS=${EPOCHS:-200}
SEEDS=${SEEDS:-0,1,2}
VIEWS=${VIEWS-50}    # 50 cached views, each seen 4 times in 200 epochs (a cache of 200 would cost 9M teacher forwards)
JOBS=${JOBS:-8}
PARAMS=${PARAMS:-4642 15472 46415}   # 1/100, 1/30, 1/10 of the teacher's 464,154 parameters
DEVICE=${DEVICE:-cuda}
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start) - 15)); }   # 15 s kept for the archive
mkdir -p "$OUTDIR"

[ -f "$SRC/run.json" ] || { echo "no $SRC/run.json: run this from the repository root"; exit 1; }
data=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['data']['data_dir'])" "$SRC/run.json")
[ -e "$data" ] || { echo "the run's data is not at $data (from the repository root): copy it there first"; exit 1; }
if [ ! -f "$RUN/run.json" ]; then  # the v2 run's study and fine-tuned teacher (not its finals or caches)
  mkdir -p "$RUN" && cp -r "$SRC/run.json" "$SRC/study.db" "$SRC/teachers" "$RUN/" || exit 1
fi
for p in $PARAMS; do
  t=$(left)
  [ "$t" -lt 30 ] && { echo "== $(date -u +%T): ${t}s left, stopping before --max-params $p"; break; }
  echo "== $(date -u +%T): --max-params $p, ${t}s left"
  # SIGINT: the models in progress keep their last saved epoch (at most a minute old); finished ones are recorded
  timeout -s INT "$t" $KD train "$RUN" --max-params "$p" --seeds "$SEEDS" --epochs "$EPOCHS" ${VIEWS:+--views "$VIEWS"} \
    ${LRS---lr-grid 0.5,1,2,4 --lr-probe-epochs $((EPOCHS / 5))} --jobs "$JOBS" --device "$DEVICE" ${EXTRA:-} \
    >> "$OUTDIR/final.log" 2>&1
  echo "exit $?"
done
tar czf "$OUTDIR/run.tar.gz" --exclude='logits' "$RUN"
tail -n 30 "$OUTDIR/final.log"
echo "== done, $(left)s left"
