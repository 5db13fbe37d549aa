#!/usr/bin/env bash
# Everything a short GPU lease runs, inside a deadline, leaving its logs and result files in OUTDIR:
# gpu.sh (CUDA tests and benchmarks), then gpu_resnet50.sh with the search's and the final
# training's limits sized to the time that is left; the run folder's small files come back as
# OUTDIR/run.tar.gz (study.db, run.json, teacher metadata, test accuracies, final results).
#   bash scripts/gpu/gpu_lease.sh OUTDIR [SECONDS]        # SECONDS: the whole budget (default 540)
#   PART=final bash scripts/gpu/gpu_lease.sh OUTDIR 840   # gpu.sh, then gpu_final.sh (the v2 run's students at
#                                                         # 200 epochs) instead of the ResNet-50 study
#   PART=oneshot bash scripts/gpu/gpu_lease.sh OUTDIR 840 # gpu.sh, then gpu_oneshot.sh (the CIFAR-10 study as a
#                                                         # one-shot study: supernets, thousands of subnets)
# Needs the package importable (installed, or PYTHONPATH=.) and the data where the study file
# says (../shared/data/cifar10-jpg.tar.gz); decoding it is started at once, beside gpu.sh.
set -uo pipefail
OUTDIR=${1:?usage: gpu_lease.sh OUTDIR [SECONDS]}
BUDGET=${2:-540}
PY=${PYTHON:-python3}
RUN=${RUN:-results/cifar10-resnet50}
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
mkdir -p "$OUTDIR"
export KDSEARCH_CACHE=${KDSEARCH_CACHE:-/tmp/kdsearch-cache}

$PY -m kdsearch --help > /dev/null || { echo "kdsearch does not import: stopping"; exit 1; }
STUDY=studies/cifar10-resnet50-gpu.toml
[ "${PART:-}" = final ] || [ "${PART:-}" = oneshot ] && STUDY=studies/cifar10-resnet32.toml   # one decode either way
$PY scripts/gpu/decode_data.py "$STUDY" > "$OUTDIR/decode.log" 2>&1 &
bash scripts/gpu/gpu.sh > "$OUTDIR/gpu.log" 2>&1
wait
echo "gpu.sh done, $(left)s left"
if [ "${PART:-}" = final ] || [ "${PART:-}" = oneshot ]; then
  bash "scripts/gpu/gpu_${PART}.sh" "$OUTDIR" "$(left)" > "$OUTDIR/${PART}-steps.log" 2>&1
  echo "done, $(left)s left"
  exit 0
fi

TRAIN_S=${TRAIN_S:-$(( $(left) / 4 ))}
SEARCH_S=$(( $(left) - TRAIN_S - 230 ))  # teacher + logit cache + start-up + wrap-up take ~230 s
[ "$SEARCH_S" -lt 40 ] && SEARCH_S=40
echo "search ${SEARCH_S}s, final training ${TRAIN_S}s"
RUN=$RUN SEARCH_S=$SEARCH_S TRAIN_S=$TRAIN_S SETUP_S=${SETUP_S:-200} bash scripts/gpu/gpu_resnet50.sh > "$OUTDIR/resnet50.log" 2>&1
$PY -m kdsearch results "$RUN" --out "$OUTDIR/RESULTS-gpu.md" --figures /tmp/kdsearch-figures >> "$OUTDIR/resnet50.log" 2>&1
tar czf "$OUTDIR/run.tar.gz" --exclude='trials' --exclude='logits' --exclude='*.safetensors' "$RUN"
echo "done, $(left)s left"
