#!/usr/bin/env bash
# What the teacher is worth at 50 epochs when it is weighed as Hinton et al. weigh it: the students of
# results/cifar10-resnet32-v2 with their distilled arm retrained at T 4, alpha 0.9 (`train --temperature
# --alpha`) instead of the search's own choice (alpha 0.03 to 0.10, made at 3-epoch trials), against the
# same no-teacher arms. Its own run folder, results/cifar10-resnet32-v2-alpha, so that RESULTS.md shows
# both answers: a copy of the v2 run's study and teacher, and of each student's no-teacher models and
# results (the same models a retraining would give: same seeds, initialization and batches), so only the
# distilled arm trains here. A student is taken once the v2 run has every seed of its no-teacher arms.
# Resumable, like the v2 run.
#   JOBS=2 bash results/cifar10-resnet32-v2-alpha.sh     (from the repository root, kdsearch installed)
# Knobs: SRC, RUN, T, ALPHA, EPOCHS, VIEWS, SEEDS, PROBE, JOBS, KD, EXTRA (more `train` options).
set -euo pipefail
SRC=${SRC:-results/cifar10-resnet32-v2}
RUN=${RUN:-results/cifar10-resnet32-v2-alpha}
T=${T:-4}
ALPHA=${ALPHA:-0.9}
EPOCHS=${EPOCHS:-50}
VIEWS=${VIEWS:-$EPOCHS}
SEEDS=${SEEDS:-0,1,2}
KD=${KD:-kdsearch}
PY=${PYTHON:-python3}
mkdir -p "$RUN/logits"
cp -n "$SRC/run.json" "$SRC/study.db" "$RUN/"
cp -rn "$SRC/teachers" "$RUN/"
for f in "$SRC"/logits/*; do [ -e "$f" ] && { ln -f "$f" "$RUN/logits/" 2>/dev/null || cp -n "$f" "$RUN/logits/"; }; done
for src in "$SRC"/final/*/; do
  number=$(basename "$src")
  # the v2 run's no-teacher arms must be in for every seed, or this folder would train them again
  if ! $PY - "$src/results.json" "$SEEDS" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
seeds = {int(s) for s in sys.argv[2].split(",")}
sys.exit(0 if all({r["seed"] for r in runs if r["mode"] == m and not r["probe"] and not r.get("error")} >= seeds
                  for m in ("ce", "ce-all")) else 1)
EOF
  then
    echo "trial $((10#$number)): the v2 run has not every seed ($SEEDS) of its no-teacher arms yet: later"
    continue
  fi
  mkdir -p "$RUN/final/$number"
  [ -f "$RUN/final/$number/results.json" ] || cp "$src/results.json" "$RUN/final/$number/"
  for model in "$src"/ce-*/; do cp -rn "$model" "$RUN/final/$number/"; done
  $KD train "$RUN" --trial "$((10#$number))" --seeds "$SEEDS" --epochs "$EPOCHS" --views "$VIEWS" --temperature "$T" \
    --alpha "$ALPHA" --lr-grid 0.5,1,2,4 --lr-probe-epochs "${PROBE:-10}" --jobs "${JOBS:-1}" ${EXTRA:-}
done
