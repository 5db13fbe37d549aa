#!/usr/bin/env bash
# Does a search trial's budget (3 epochs on the 10,000-image subset) favour a small distillation weight that
# longer training does not? Two fixed students, 3 seeds, without the teacher, at T 4, alpha 0.9 (Hinton et al.;
# +2.4 points on ResNet-8 at 10 epochs on all 45,000 images, "Training recipe" in BENCHMARKS.md) and at T 7,
# alpha 0.05 (where the CIFAR-10 v2 search's picks are). Resumable (the recipe benchmark skips finished models).
#   bash benchmarks/results/alpha-budget/run.sh          (from the repository root, the package importable)
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/alpha-budget}
ARGS="--students res8 plain15k --variants default --seeds 0 1 2 --epochs 3 --subset 10000 --threads ${THREADS:-1}"
ARGS="$ARGS --teacher-run ${TEACHER_RUN:-results/cifar10-resnet32-v2} --out $OUT"
$PY -m benchmarks recipe $ARGS --arms ce kd
$PY -m benchmarks recipe $ARGS --arms kd --temperature 7 --alpha 0.05
