#!/usr/bin/env bash
# The ResNet-50 part of the research question, sized to one short GPU lease (run after gpu.sh):
# a ResNet-50 teacher trained on CIFAR-10 (studies/cifar10-resnet50-gpu.toml), a search under a
# wall-clock limit, then the most accurate front members at <= 1/10, 1/30 and 1/100 of the
# teacher's params retrained with and without the teacher (same views, 3 seeds, the trial's lr),
# one process per student sharing the GPU, epochs sized to TRAIN_S by scripts/gpu/gpu_plan.py.
# Every step is resumable: rerunning the script continues where a limit stopped it.
#   bash scripts/gpu/gpu_resnet50.sh            # then, on any machine with the run folder:
#   kdsearch results ... results/cifar10-resnet50 --out RESULTS.md   (as RESULTS.md names it)
# Knobs (environment): RUN, STUDY, SEARCH_S, TRAIN_S, WORKERS, SEEDS, EXTRA (more `run` options).
set -uo pipefail
RUN=${RUN:-results/cifar10-resnet50}
STUDY=${STUDY:-studies/cifar10-resnet50-gpu.toml}
SEARCH_S=${SEARCH_S:-200}
TRAIN_S=${TRAIN_S:-150}
WORKERS=${WORKERS:-4}
SEEDS=${SEEDS:-0,1,2}
PY=${PYTHON:-python3}
KD="$PY -m kdsearch"
nseeds=$(echo "$SEEDS" | tr ',' '\n' | wc -l)

echo "== search: $STUDY, new trials started for ${SEARCH_S}s ($(date -u +%T))"
# the teacher and logit cache come first (not counted in --timeout); the outer limit is a safety net
timeout -s INT $((SEARCH_S + ${SETUP_S:-240})) $KD run "$STUDY" --run-dir "$RUN" --timeout "$SEARCH_S" --workers "$WORKERS" ${EXTRA:-}
echo "search exit $? ($(date -u +%T))"

plan=$($PY scripts/gpu/gpu_plan.py "$RUN" --seconds "$TRAIN_S" --seeds "$nseeds") || exit 1
read -r picks epochs <<<"$plan"
echo "== final training: trials $picks, $epochs epochs, seeds $SEEDS, one process each, ${TRAIN_S}s ($(date -u +%T))"
for t in ${picks//,/ }; do
  timeout -s INT $((TRAIN_S + 40)) $KD train "$RUN" --trials "$t" --seeds "$SEEDS" --epochs "$epochs" --lr-grid 1 \
    > "$RUN/train-$t.log" 2>&1 &
done
wait
tail -n 4 "$RUN"/train-*.log
echo "== done ($(date -u +%T))"
