#!/usr/bin/env bash
# The CIFAR-10 run that asks whether the search beats hand-written students (docs/cifar10-runs.md), v4:
# the search of studies/cifar10-resnet32.toml (60 trials of 3 epochs on 10,000 images, then the most
# accurate student of each size band and family promoted to 3 epochs on all 45,000, where the front is read), then
# the most accurate front members within 1/100, 1/30 and 1/10 of the teacher's 464,154 parameters retrained
# for EPOCHS epochs on all 45,000 images, distilled (T 4, alpha 0.9) and by ordinary training, 3 seeds,
# each arm's lr chosen on validation from 0.1, 0.2 and 0.4 by probes of a fifth of the budget (train's
# default), with the hand-written references (resnet8, mobilenetv2-tiny, vgg-tiny) scaled to at most each
# student's parameters trained beside it by the same arms, seeds and recipe (train's default). The
# smallest band first (seed 0, then seeds 1 and 2), then the larger ones. Resumable: rerun the same
# command and it continues where it stopped (finished trials and models are kept, a model in progress
# from its last saved epoch).
#   bash results/cifar10-resnet32-v4.sh            (from the repository root, kdsearch installed)
#   JOBS=2 bash results/cifar10-resnet32-v4.sh    (final training: two models at once, one thread each)
#   THREADS=1 ...                                  (the search on one thread, beside other work)
#   SEARCH_ONLY=1 ...                              (stop after the search and its promotions)
# REUSE=FOLDER copies a run folder's prepared teacher and logit caches first (their keys decide
# whether they are used: another teacher, data or view count is prepared again). STUDY=FILE searches
# another study file (results/cifar10-resnet32-v3.sh: the v3 study, whose rung is 10 epochs).
set -euo pipefail
STUDY=${STUDY:-studies/cifar10-resnet32.toml}
RUN=${RUN:-results/cifar10-resnet32-v4}
EPOCHS=${EPOCHS:-50}
KD=${KD:-kdsearch}
if [ -n "${REUSE:-}" ]; then
  mkdir -p "$RUN/teachers" "$RUN/logits"
  cp -n "$REUSE"/teachers/* "$RUN/teachers/" 2>/dev/null || true
  cp -n "$REUSE"/logits/* "$RUN/logits/" 2>/dev/null || true
fi
$KD run "$STUDY" --run-dir "$RUN" ${THREADS:+--threads "$THREADS"}
[ -n "${SEARCH_ONLY:-}" ] && exit 0
train() { $KD train "$RUN" --max-params "$1" --seeds "$2" --epochs "$EPOCHS" --no-baseline --jobs "${JOBS:-1}"; }
# 1/100, 1/30 and 1/10 of the teacher's params (4642, 15472, 46415)
for params in 4642 15472 46415; do
  for seeds in 0 0,1,2; do train "$params" "$seeds"; done
done
