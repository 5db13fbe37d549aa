#!/usr/bin/env bash
# One-shot search fidelity on CIFAR-10 (BENCHMARKS.md "One-shot search: fidelity"): does a subnet's
# inherited-weight validation accuracy rank subnets as training them from scratch does? Per band of
# 1/30, 1/10 and 1/5 of the ResNet-32 teacher's 464,154 parameters, four of the CPU one-shot run's scored
# subnets with between half the band and the band (the least and most accurate and evenly between),
# each trained from scratch at 10 epochs on all 45,000 training images at the run's T, alpha and lr: the
# same final budget the per-trial search's within-band fidelity (fidelity-cifar10-bands) ranks against.
# The run has no subnet under 4,642 parameters, so no 1/100 band. Also each subnet fine-tuned 3 epochs from
# its inherited weights (the run's supernet, committed) and trained 3 epochs from scratch, on all 45,000: what
# starting from the inherited weights is worth. The final budget trains last. Resumable: trained models are skipped.
#   bash benchmarks/results/fidelity-oneshot/run.sh     (from the repository root, the package importable)
# THREADS=N trains on N threads (beside other work). REUSE=RUN copies a run folder's prepared teacher and
# logit cache first (their keys decide whether they are used): the one-shot run's own by default.
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/fidelity-oneshot}
REUSE=${REUSE-results/cifar10-resnet32-oneshot}
for d in teachers logits; do
  if [ -n "$REUSE" ] && [ -d "$REUSE/$d" ]; then mkdir -p "$OUT/run/$d"; cp -rn "$REUSE/$d"/. "$OUT/run/$d/" || true; fi
done
$PY -m benchmarks fidelity studies/cifar10-resnet32-oneshot-cpu.toml --oneshot results/cifar10-resnet32-oneshot \
    --bands 15472 46415 93000 --per-band 4 --final-epochs 10 --finetune 3 --proxies 45000x3 \
    ${THREADS:+--set threads=$THREADS} --out "$OUT"
