"""Decode a study file's dataset into kdsearch's cache ($KDSEARCH_CACHE) and print its shape.

The GPU lease scripts run this once before (or beside) the processes that read the data, so that
several processes do not each decode the same images.

    python scripts/gpu/decode_data.py studies/cifar10-resnet32-cpu.toml
"""

import sys

from kdsearch.config import load_config
from kdsearch.data.datasets import load_data

if __name__ == "__main__":
    data = load_data(load_config(sys.argv[1]).data)
    print("data", data.name, "train", tuple(data.train.x.shape))
