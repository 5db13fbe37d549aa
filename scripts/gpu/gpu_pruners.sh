#!/usr/bin/env bash
# The CIFAR-10 subset pruner benchmark (python -m benchmarks pruners, 40 trials x EPOCHS (4) on 2,000 images)
# on a lent GPU, inside a deadline. The unpruned studies of 3 seeds x 2 spaces (all families,
# plain only) run as 6 parallel processes, each with its own run folder (a copy of TEACHER_RUN,
# which holds the fine-tuned ResNet-32 and its logit cache, so nothing is fine-tuned here) and
# its own SQLite file; at the deadline they stop (unpruned studies are resumable) and are merged
# into OUTDIR/pruners.tar.gz: pruners-cifar10-gpu/unpruned.db and
# pruners-cifar10-plain-gpu/unpruned.db (and the logs), which `python -m benchmarks pruners --out DIR` replays on any
# machine without training.
#   bash scripts/gpu/gpu_pruners.sh OUTDIR SECONDS TEACHER_RUN
# Needs the package importable and the data and checkpoint where the study file says.
set -uo pipefail
OUTDIR=${1:?usage: gpu_pruners.sh OUTDIR SECONDS TEACHER_RUN}
BUDGET=${2:?seconds}
TEACHER_RUN=${3:?a run folder with teachers/ and logits/}
PY=${PYTHON:-python3}
STUDY=studies/cifar10-resnet32-cpu.toml
EPOCHS=${EPOCHS:-4}
TAG=$([ "$EPOCHS" = 4 ] || echo "-e$EPOCHS")  # folders of other trial lengths: pruners-cifar10-e12-gpu
WORK=${WORK:-/tmp/gpu-pruners}
start=$(date +%s)
mkdir -p "$OUTDIR" "$WORK/logs" "$WORK/merged"

# decode the data once, before six processes would each decode it
$PY scripts/gpu/decode_data.py "$STUDY" || { echo "data does not load: stopping"; exit 1; }
for space in all plain; do
  for seed in 0 1 2; do
    name=$space-seed$seed
    mkdir -p "$WORK/$name/run" && cp -r "$TEACHER_RUN/teachers" "$TEACHER_RUN/logits" "$WORK/$name/run/"
    family=(); [ "$space" = plain ] && family=(--set 'space.family="plain"')
    timeout $((BUDGET - ($(date +%s) - start) - 20)) $PY -m benchmarks pruners "$STUDY" --subset 2000 \
      --trials 40 --epochs $EPOCHS --seeds $seed --pruners none --set threads=2 "${family[@]}" \
      --out "$WORK/$name" --run-dir "$WORK/$name/run" > "$WORK/logs/$name.log" 2>&1 &
  done
done
wait
tail -n 2 "$WORK"/logs/*.log
echo "studies stopped, $((BUDGET - ($(date +%s) - start)))s left"
$PY - <<PY
import optuna
from pathlib import Path
work = Path("$WORK")
for space, folder in [("all", "pruners-cifar10$TAG-gpu"), ("plain", "pruners-cifar10-plain$TAG-gpu")]:
    (work / "merged" / folder).mkdir(parents=True, exist_ok=True)
    to = f"sqlite:///{work / 'merged' / folder / 'unpruned.db'}"
    for db in sorted(work.glob(f"{space}-seed*/unpruned.db")):  # the seeds launched above
        src = f"sqlite:///{db}"
        for name in optuna.get_all_study_names(src):
            optuna.copy_study(from_study_name=name, from_storage=src, to_storage=to)
            done = sum(t.state.name == "COMPLETE" for t in optuna.load_study(study_name=name, storage=to).trials)
            print(folder, name, done, "complete trials")
PY
cp -r "$WORK/logs" "$WORK/merged/"
tar czf "$OUTDIR/pruners.tar.gz" -C "$WORK/merged" .
echo "done, $((BUDGET - ($(date +%s) - start)))s left"
