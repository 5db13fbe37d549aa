#!/usr/bin/env bash
# The CIFAR-10 run behind RESULTS.md's ResNet-32 section (docs/cifar10-runs.md): the search of
# studies/cifar10-resnet32-v2.toml, then the most accurate front members within 1/10, 1/30 and 1/100 of
# the teacher's 464,154 parameters retrained on all 45,000 training images for EPOCHS epochs, with the
# teacher, without it (ordinary training) and the same-views control, each arm at its own learning rate
# chosen on validation from the trial's lr x 0.5, 1, 2, 4 by 10-epoch probes on the first seed (a full grid
# would train the first seed four times over; x4 was added when both arms of the first student chose x2, the
# grid's edge), the distilled arm
# from VIEWS cached teacher views per image (default: one per epoch, so it sees fresh views as ordinary
# training does; cheaper than the teacher online over 3 seeds, BENCHMARKS.md). The two smaller students
# first, seed 0 then seeds 1 and 2 (their gains get intervals), then the 1/10 student, which costs more
# than both together. Resumable: rerun the same command and it continues where it stopped (finished
# trials and models are kept, a model in progress from its last saved epoch).
#   bash results/cifar10-resnet32-v2.sh            (from the repository root, kdsearch installed)
#   JOBS=2 bash results/cifar10-resnet32-v2.sh    (final training: two models at once, one CPU thread each on 2 cores)
#   THREADS=1 ...                                  (the search on one thread, beside other work)
# REUSE=FOLDER copies a run folder's prepared teacher and logit caches first (their keys decide
# whether they are used: another teacher, data or view count is prepared again).
set -euo pipefail
RUN=${RUN:-results/cifar10-resnet32-v2}
EPOCHS=${EPOCHS:-50}
VIEWS=${VIEWS:-$EPOCHS}
KD=${KD:-kdsearch}
if [ -n "${REUSE:-}" ]; then
  mkdir -p "$RUN/teachers" "$RUN/logits"
  cp -n "$REUSE"/teachers/* "$RUN/teachers/" 2>/dev/null || true
  cp -n "$REUSE"/logits/* "$RUN/logits/" 2>/dev/null || true
fi
# searched without pruning, so that the study file's pruner can be measured on it at no training cost:
#   python -m benchmarks pruners --run "$RUN" --out benchmarks/results/pruners-cifar10-v2 --pruners ...
$KD run studies/cifar10-resnet32-v2.toml --run-dir "$RUN" --pruner none ${THREADS:+--threads "$THREADS"}
train() { $KD train "$RUN" --max-params "$1" --seeds "$2" --epochs "$EPOCHS" --views "$VIEWS" --lr-grid 0.5,1,2,4 --lr-probe-epochs ${PROBE:-10} --jobs "${JOBS:-1}"; }
# 1/100, 1/30 and 1/10 of the teacher's params (4642, 15472, 46415)
for students in "4642 15472" 46415; do
  for seeds in 0 0,1,2; do
    for params in $students; do train "$params" "$seeds"; done
  done
done
