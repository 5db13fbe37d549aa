#!/bin/bash
cd /work/bench
PY="env PYTHONPATH=/work/bench /work/main/.venv/bin/python"
OUT=/work/main/benchmarks/results/recipe
V="old default lr=0.4 lr=0.1 batch_size=128,lr=0.1 batch_size=512,lr=0.4 label_smoothing=0 label_smoothing=0.2 weight_decay=0.0002 weight_decay=0.001 ema=0.99 schedule=cosine warmup=0.05 optimizer=adamw,lr=0.005,weight_decay=0.05 optimizer=adamw,lr=0.01,weight_decay=0.05"
$PY benchmarks/bench_recipe.py --data ../shared/data/cifar10-jpg.tar.gz --students plain15k --variants $V --seeds 0 --epochs 10 --threads 2 --out $OUT
$PY benchmarks/bench_recipe.py --data ../shared/data/cifar10-jpg.tar.gz --students res8 --variants old default ema=0.99 lr=0.4 batch_size=128,lr=0.1 label_smoothing=0 --seeds 0 --epochs 10 --threads 2 --out $OUT
