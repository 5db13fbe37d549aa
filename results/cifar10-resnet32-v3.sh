#!/usr/bin/env bash
# The v3 CIFAR-10 run (docs/cifar10-runs.md): results/cifar10-resnet32-v4.sh with the v3 study, whose
# most accurate student of each size band and family is promoted to 10 epochs on all 45,000 images (v4:
# 3), and its own run folder; the same final training and settings (THREADS, JOBS, SEARCH_ONLY, REUSE, KD).
#   bash results/cifar10-resnet32-v3.sh            (from the repository root, kdsearch installed)
#   JOBS=2 bash results/cifar10-resnet32-v3.sh    (final training: two models at once, one thread each)
set -euo pipefail
STUDY=studies/cifar10-resnet32-v3.toml RUN=${RUN:-results/cifar10-resnet32-v3} \
  exec bash "$(dirname "$0")/cifar10-resnet32-v4.sh" "$@"
