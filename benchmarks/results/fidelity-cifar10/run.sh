#!/usr/bin/env bash
# The search-fidelity benchmark of BENCHMARKS.md "Search fidelity" on CIFAR-10: 12 students of
# studies/cifar10-resnet32.toml's space and budgets, each trained at proxy budgets of about the same
# cost (10,000 images x 3 epochs, 20,000 x 2, all 45,000 x 1, and 5,000 x 6: enough epochs for the
# pruner to act) and at 10 epochs on all 45,000 (the recipe benchmark's budget), with the ResNet-32
# teacher. Resumable: trained models are skipped (a budget added later trains only its models).
#   bash benchmarks/results/fidelity-cifar10/run.sh     (from the repository root, the package importable)
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/fidelity-cifar10}
$PY -m benchmarks fidelity studies/cifar10-resnet32.toml --students 12 --proxies 10000x3 20000x2 45000x1 5000x6 \
    --final-epochs 10 --out "$OUT"
