#!/bin/bash
# wait for the running plain15k "old" model to be recorded, then run the prioritized queue
OUT=/work/main/benchmarks/results/recipe
while [ ! -s $OUT/results.jsonl ]; do sleep 20; done
pkill -f screen.sh; pkill -f bench_recipe.py; sleep 3
cd /work/bench
PY="env PYTHONPATH=/work/bench /work/main/.venv/bin/python"
ARGS="--data ../shared/data/cifar10-jpg.tar.gz --seeds 0 --epochs 10 --threads 2 --out $OUT"
$PY benchmarks/bench_recipe.py --students res8 --variants default old $ARGS
$PY benchmarks/bench_recipe.py --students plain15k --variants default $ARGS
$PY benchmarks/bench_recipe.py --students res8 --variants ema=0.99 batch_size=128,lr=0.1 lr=0.4 label_smoothing=0 $ARGS
$PY benchmarks/bench_recipe.py --students plain15k --variants ema=0.99 batch_size=128,lr=0.1 lr=0.4 label_smoothing=0 $ARGS
$PY benchmarks/bench_recipe.py --students res8 --variants weight_decay=0.001 optimizer=adamw,lr=0.005,weight_decay=0.05 schedule=cosine $ARGS
