"""Dataset layer: splits, caching, archives, errors, on tiny data made here.

Every fixture image carries a unique id in its top-left pixel, so tests can check that no
image leaks between train, val and test.
"""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image


from kdsearch.config import DataConfig
from kdsearch.data.datasets import load_data
from kdsearch.data.decode_cache import cache_root
from kdsearch.data.splits import DataSplits, Split, stratified_subset
from kdsearch.errors import KDSearchError

CLASSES = ["cat", "dog", "frog"]
N_TRAIN, N_TEST = 12, 6  # per class


def make_folder(root: Path, classes=CLASSES, size=(8, 8), mode="RGB", test_name="test") -> dict[int, int]:
    """Write root/{train,test}/<class>/<i>.png; returns {image id: label} (id = top-left pixel)."""
    rng = np.random.default_rng(0)
    labels, tag = {}, 1
    for split, n in (("train", N_TRAIN), (test_name, N_TEST)):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                channels = 1 if mode == "L" else 3
                pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
                pixels[0, 0] = tag
                image = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode)
                image.save(root / split / name / f"{i:03d}.png")
                labels[tag] = label
                tag += 1
    return labels


def tags(split: Split) -> list[int]:
    return split.x[:, 0, 0, 0].tolist()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict[int, int]]:
    root = tmp_path / "pets"
    return root, make_folder(root)


def imagefolder(path: Path, **kw) -> DataConfig:
    return DataConfig(dataset="imagefolder", data_dir=str(path), **{"val_fraction": 0.25, **kw})


def test_cache_root_follows_env(cache, monkeypatch):
    assert cache_root() == cache
    monkeypatch.delenv("KDSEARCH_CACHE")
    assert cache_root() == Path.home() / ".cache" / "kdsearch"


def test_imagefolder_shapes_and_disjoint_stratified_splits(folder):
    root, labels = folder
    d = load_data(imagefolder(root), seed=0)
    assert isinstance(d, DataSplits) and d.name == "imagefolder:pets" and d.classes == CLASSES
    assert (len(d.train), len(d.val), len(d.test)) == (27, 9, 18)
    for split in (d.train, d.val, d.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (3, 8, 8)
        assert [labels[t] for t in tags(split)] == split.y.tolist()  # labels travel with their images
    assert d.in_channels == 3 and d.image_size == 8 and d.num_classes == 3
    train, val, test = set(tags(d.train)), set(tags(d.val)), set(tags(d.test))
    assert not train & val and not (train | val) & test
    assert train | val == {t for t in labels if t <= 3 * N_TRAIN} and test == set(labels) - train - val
    assert torch.bincount(d.val.y).tolist() == [3, 3, 3]
    pixels = d.train.x.double() / 255
    assert d.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist())
    assert d.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist())
    assert all(type(v) is float for v in d.mean + d.std)
    assert (d.pad, d.flip) == (4, True)


def test_augmentation_overrides(folder):
    d = load_data(imagefolder(folder[0], pad=0, flip=False))
    assert (d.pad, d.flip) == (0, False)


def test_val_split_is_seeded(folder):
    cfg = imagefolder(folder[0])
    a, b = load_data(cfg, seed=0), load_data(cfg, seed=0)
    assert tags(a.val) == tags(b.val) and tags(a.train) == tags(b.train)
    others = [set(tags(load_data(cfg, seed=s).val)) for s in (1, 2)]
    assert any(o != set(tags(a.val)) for o in others)
    assert tags(load_data(cfg, seed=1).test) == tags(a.test)  # the test split never moves


def test_val_folder_is_used_when_there_is_no_test(tmp_path):
    make_folder(tmp_path / "v", test_name="val")
    assert len(load_data(imagefolder(tmp_path / "v")).test) == 3 * N_TEST


def test_grayscale_images_give_one_channel(tmp_path):
    make_folder(tmp_path / "g", mode="L")
    d = load_data(imagefolder(tmp_path / "g"))
    assert d.train.x.shape[1:] == (1, 8, 8) and len(d.mean) == 1


@pytest.mark.parametrize("top_level", [True, False])
def test_tar_gz_archive(folder, tmp_path, cache, top_level):
    root, labels = folder
    archive = tmp_path / "pets-v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for sub in ("train", "test"):
            tar.add(root / sub, arcname=f"pets/{sub}" if top_level else sub)
    d = load_data(imagefolder(archive))
    assert d.name == "imagefolder:pets-v1"
    assert sorted(tags(d.train) + tags(d.val)) == sorted(tags(load_data(imagefolder(root)).train)
                                                        + tags(load_data(imagefolder(root)).val))
    assert len(list((cache / "extracted").iterdir())) == 1


def test_second_load_hits_the_cache(folder, cache, monkeypatch, tmp_path):
    first = load_data(imagefolder(folder[0]))
    files = list((cache / "arrays").glob("imagefolder-*.pt"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr("kdsearch.data.imagefolder._decode_images", fail)
    again = load_data(imagefolder(folder[0]))
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    assert isinstance(torch.load(files[0], weights_only=True), dict)  # safe to load


def test_a_damaged_cache_file_is_decoded_again(folder, cache):
    first = load_data(imagefolder(folder[0]))
    (path,) = list((cache / "arrays").glob("imagefolder-*.pt"))
    path.write_bytes(path.read_bytes()[:200])  # truncated, as a killed copy would leave it
    again = load_data(imagefolder(folder[0]))
    assert torch.equal(first.train.x, again.train.x)
    assert isinstance(torch.load(path, weights_only=True), dict)  # rewritten whole


def test_changed_folder_invalidates_the_cache(folder, cache):
    root, _ = folder
    load_data(imagefolder(root))
    time.sleep(0.01)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    assert len(load_data(imagefolder(root)).train) + len(load_data(imagefolder(root)).val) == 3 * N_TRAIN + 1
    assert len(list((cache / "arrays").glob("*.pt"))) == 2


def test_archive_cache_hit_skips_extraction(folder, tmp_path, monkeypatch):
    archive = tmp_path / "pets.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder[0], arcname="pets")
    load_data(imagefolder(archive))
    monkeypatch.setattr("kdsearch.data.imagefolder._extract", lambda *a: (_ for _ in ()).throw(AssertionError("extracted again")))
    assert len(load_data(imagefolder(archive)).test) == 3 * N_TEST


def one_line_error(cfg: DataConfig, *words: str) -> str:
    with pytest.raises(KDSearchError) as info:
        load_data(cfg)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def test_imagefolder_layout_errors(tmp_path):
    one_line_error(imagefolder(tmp_path / "nope"), "does not exist", "train/")
    (tmp_path / "empty").mkdir()
    one_line_error(imagefolder(tmp_path / "empty"), "no train/")
    (tmp_path / "only" / "train" / "a").mkdir(parents=True)
    one_line_error(imagefolder(tmp_path / "only"), "neither test/ nor val/")
    (tmp_path / "file.txt").write_text("x")
    one_line_error(imagefolder(tmp_path / "file.txt"), "neither a folder nor a .tar.gz")


def test_imagefolder_content_errors(tmp_path):
    make_folder(tmp_path / "m")
    (tmp_path / "m" / "test" / "bird").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "m" / "test" / "bird" / "0.png")
    one_line_error(imagefolder(tmp_path / "m"), "different class folders", "bird")
    make_folder(tmp_path / "s")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "s" / "test" / "cat" / "big.png")
    one_line_error(imagefolder(tmp_path / "s"), "big.png is 8x9 but", "pass --image-size N")
    make_folder(tmp_path / "c")
    (tmp_path / "c" / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    one_line_error(imagefolder(tmp_path / "c"), "cannot decode", "broken.png")


def test_digits_has_a_fixed_test_split():
    a = load_data(DataConfig(dataset="digits"), seed=0)
    b = load_data(DataConfig(dataset="digits"), seed=7)
    assert len(a.train) + len(a.val) + len(a.test) == 1797 and len(a.test) == 359
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.val.x, b.val.x)
    assert a.train.x.shape[1:] == (1, 8, 8) and int(a.train.x.max()) == 255 and a.classes == [str(i) for i in range(10)]
    assert torch.bincount(a.test.y).min() >= 35 and (a.pad, a.flip) == (1, False)


def test_a_resized_dataset_is_resized_once_and_cached(cache, monkeypatch):
    first = load_data(DataConfig(dataset="digits", image_size=16))
    assert first.train.x.shape[1:] == (1, 16, 16)
    assert load_data(DataConfig(dataset="digits", image_size=8)).train.x.shape[1:] == (1, 8, 8)  # native: as is

    def fail(*args, **kwargs):
        raise AssertionError("resized again despite the cache")
    monkeypatch.setattr("kdsearch.data.datasets.resized", fail)
    again = load_data(DataConfig(dataset="digits", image_size=16))
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.x, again.test.x)
    assert len(list((cache / "arrays").glob("digits-*.pt"))) == 2  # the decoded source and its 16x16 copy


def test_torchvision_offline_is_one_line(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    msg = one_line_error(DataConfig(dataset="cifar10", data_dir=str(tmp_path)), "cifar10", "offline",
                         "--data-dir", "imagefolder", "digits")
    assert str(tmp_path) in msg
    one_line_error(DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False), "download is off")


class FakeCifar:
    classes = ["a", "b"]

    def __init__(self, root, train=True, download=False):
        n = 6 if train else 4
        self.data = np.arange(n * 5 * 4 * 3, dtype=np.int64).astype(np.uint8).reshape(n, 5, 4, 3)
        self.targets = [i % 2 for i in range(n)]


class FakeMnist:
    classes = ["0 - zero", "1 - one"]

    def __init__(self, root, train=True, download=False):
        n = 6 if train else 4
        self.data = torch.zeros(n, 7, 7, dtype=torch.uint8)
        self.targets = torch.tensor([i % 2 for i in range(n)])


class FakeSvhn:
    def __init__(self, root, split="train", download=False):
        n = 6 if split == "train" else 4
        self.data = np.zeros((n, 3, 6, 6), np.uint8)
        self.labels = np.array([i % 2 for i in range(n)])


@pytest.mark.parametrize("name, attr, fake, shape", [
    ("cifar10", "CIFAR10", FakeCifar, (3, 5, 4)),
    ("fashion-mnist", "FashionMNIST", FakeMnist, (1, 7, 7)),
    ("svhn", "SVHN", FakeSvhn, (3, 6, 6)),
])
def test_torchvision_layouts(monkeypatch, tmp_path, name, attr, fake, shape):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, attr, fake)
    d = load_data(DataConfig(dataset=name, data_dir=str(tmp_path), val_fraction=0.34))
    assert d.train.x.shape[1:] == shape and d.train.x.dtype == torch.uint8 and d.test.y.dtype == torch.int64
    assert (len(d.train), len(d.val), len(d.test)) == (4, 2, 4) and d.name == name
    if name == "cifar10":  # N x H x W x C became N x C x H x W
        src = torch.from_numpy(FakeCifar(None, train=False).data)
        assert torch.equal(d.test.x, src.permute(0, 3, 1, 2))
    assert (d.pad, d.flip) == {"cifar10": (4, True), "fashion-mnist": (2, True), "svhn": (4, False)}[name]


def test_stratified_subset_keeps_proportions():
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    split = Split(torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1), y)
    sub = stratified_subset(split, 20, seed=3)
    assert torch.bincount(sub.y).tolist() == [12, 6, 2]
    assert tags(sub) == sorted(tags(sub)) and set(tags(sub)) <= set(range(100))
    assert tags(stratified_subset(split, 20, seed=3)) == tags(sub)
    assert tags(stratified_subset(split, 20, seed=4)) != tags(sub)
    assert stratified_subset(split, 100, seed=0) is split and stratified_subset(split, 0, seed=0) is split
    rare = Split(split.x, torch.tensor([0] * 97 + [1] * 2 + [2]))
    assert torch.bincount(stratified_subset(rare, 3, seed=0).y, minlength=3).tolist() == [1, 1, 1]
    assert len(stratified_subset(rare, 7, seed=0)) == 7


REAL_CACHE = os.environ.get("KDSEARCH_CACHE")  # read before the autouse fixture replaces it
CIFAR_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.shared
def test_real_cifar10_archive(monkeypatch):
    """The offline CIFAR-10 copy; uses the real cache so only the first run decodes (about a minute)."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"{CIFAR_ARCHIVE} is absent")
    if REAL_CACHE:
        monkeypatch.setenv("KDSEARCH_CACHE", REAL_CACHE)
    else:
        monkeypatch.delenv("KDSEARCH_CACHE")
    d = load_data(DataConfig(dataset="imagefolder", data_dir=str(CIFAR_ARCHIVE), val_fraction=0.1), seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (45000, 5000, 10000)
    assert d.num_classes == 10 and d.classes[0] == "airplane" and d.train.x.shape[1:] == (3, 32, 32)
    assert torch.bincount(d.val.y).tolist() == [500] * 10 and torch.bincount(d.test.y).tolist() == [1000] * 10
    assert d.name == "imagefolder:cifar10-jpg" and 0.4 < d.mean[0] < 0.6
