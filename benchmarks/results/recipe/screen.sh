#!/usr/bin/env bash
# The training-recipe screen of BENCHMARKS.md "Training recipe", in the order it runs: one seed, no
# teacher, 10 epochs on the CIFAR-10 JPEG copy. Resumable: models already in results.jsonl are skipped.
#   bash benchmarks/results/recipe/screen.sh      (from the repository root, the package importable)
set -euo pipefail
PY=${PYTHON:-python3}
OUT=benchmarks/results/recipe
ARGS="--data ../shared/data/cifar10-jpg.tar.gz --seeds 0 --epochs 10 --threads 2 --out $OUT"
$PY benchmarks/bench_recipe.py --students plain15k --variants old $ARGS
$PY benchmarks/bench_recipe.py --students res8 --variants default old $ARGS
$PY benchmarks/bench_recipe.py --students plain15k --variants default $ARGS
$PY benchmarks/bench_recipe.py --students res8 --variants ema=0.99 batch_size=128,lr=0.1 lr=0.4 label_smoothing=0 $ARGS
$PY benchmarks/bench_recipe.py --students plain15k --variants ema=0.99 batch_size=128,lr=0.1 lr=0.4 label_smoothing=0 $ARGS
$PY benchmarks/bench_recipe.py --students res8 --variants weight_decay=0.001 optimizer=adamw,lr=0.005,weight_decay=0.05 schedule=cosine $ARGS
