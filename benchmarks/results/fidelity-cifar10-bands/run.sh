#!/usr/bin/env bash
# Within-band search fidelity on CIFAR-10 (BENCHMARKS.md "Search fidelity"): students of about the same
# size, as the search decides between them. Per band of 1/100, 1/30 and 1/10 of the ResNet-32 teacher's
# 464,154 parameters: the three hand-written references scaled to at most the band and three students of
# the space (all three families) sampled between half the band and the band; every student at T 4,
# alpha 0.9, lr 0.2 (only the architecture differs), trained at the search's proxy budgets (10,000 images
# x 3 epochs, all 45,000 x 3) and at 10 epochs on all 45,000 (the final budget it ranks against; 50
# epochs for 18 students is beyond a CPU session). Resumable: trained models are skipped.
#   bash benchmarks/results/fidelity-cifar10-bands/run.sh     (from the repository root, the package importable)
# THREADS=N trains on N threads (beside other work). REUSE=FOLDER copies a run folder's prepared teacher first (its key decides whether it is used).
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/fidelity-cifar10-bands}
if [ -n "${REUSE:-}" ]; then mkdir -p "$OUT/run/teachers"; cp -n "$REUSE"/teachers/* "$OUT/run/teachers/" || true; fi
$PY -m benchmarks fidelity studies/cifar10-resnet32-v2.toml --bands 4642 15472 46415 --per-band 3 \
    --fixed temperature=4 alpha=0.9 lr=0.2 --proxies 10000x3 45000x3 --final-epochs 10 \
    --set 'space.family=["plain","residual","inverted"]' train.views=10 ${THREADS:+threads=$THREADS} --out "$OUT"
