#!/usr/bin/env bash
# The CIFAR-10 run behind RESULTS.md's ResNet-32 section (docs/cifar10-runs.md): the search of
# studies/cifar10-resnet32.toml, then the most accurate front members within 1/10, 1/30 and 1/100 of
# the teacher's 464,154 parameters retrained on all 45,000 training images for EPOCHS epochs, with the
# teacher, without it (ordinary training) and the same-views control, each arm at its own learning rate
# chosen on validation from the trial's lr x 0.5, 1, 2, 4 by 10-epoch probes on the first seed (a full grid
# would train the first seed four times over; x4 was added when both arms of the first student chose x2, the
# grid's edge), the distilled arm
# from VIEWS cached teacher views per image (default: one per epoch, so it sees fresh views as ordinary
# training does; cheaper than the teacher online over 3 seeds, BENCHMARKS.md). Seed 0 of every
# student first, then seeds 1 and 2, so a stopped run has every size. Resumable: rerun the same
# command and it continues where it stopped (finished trials and models are kept).
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
#   python benchmarks/bench_pruners.py --run "$RUN" --out benchmarks/results/pruners-cifar10-v2 --pruners ...
$KD run studies/cifar10-resnet32.toml --run-dir "$RUN" --pruner none ${THREADS:+--threads "$THREADS"}
for seeds in 0 0,1,2; do   # seed 0 of every size first
  for params in 4642 15472 46415; do   # 1/100, 1/30, 1/10 of the teacher's params (the quickest first)
    $KD train "$RUN" --max-params "$params" --seeds "$seeds" --epochs "$EPOCHS" --views "$VIEWS" --lr-grid 0.5,1,2,4 --lr-probe-epochs ${PROBE:-10} --jobs "${JOBS:-1}"
  done
done
