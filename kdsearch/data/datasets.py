"""Datasets -> DataSplits: train / val / test as uint8 tensors held in memory.

Every dataset is decoded once into uint8 arrays and cached on disk; the validation split is
carved (stratified, seeded) from the training data, and the test split is only ever used for
final reports, never by the search.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from ..config import DataConfig
from ..errors import KDSearchError
from ..runs.files import new_folders
from .decode_cache import Arrays, cache_root, cached, make_arrays
from .imagefolder import imagefolder_source
from .splits import DataSplits, Split, channel_stats, split_val, stratified_pick


DIGITS_TEST_SEED = 0  # fixed, so the carved digits test split never depends on the study seed
TORCHVISION = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")

# (pad, flip) when the config leaves them None; flip only where a mirror image keeps its label.
AUGMENT_DEFAULTS: dict[str, tuple[int, bool]] = {
    "cifar10": (4, True), "cifar100": (4, True), "imagefolder": (4, True), "svhn": (4, False),
    "mnist": (2, False), "fashion-mnist": (2, True), "digits": (1, False),
}


def load_data(cfg: DataConfig, seed: int = 0, cache_dir: Path | None = None) -> DataSplits:
    """Load cfg.dataset as train / val / test uint8 tensors (N x C x H x W) with int64 labels.

    The val split is a stratified cfg.val_fraction of the official training data, seeded with
    `seed`; train is the rest; test is the official test split, untouched. cfg.subset is not
    applied here (see stratified_subset). `cache_dir` replaces cache_root() for this call.
    digits has no official test split: a stratified 20% is carved off first with a fixed seed
    (DIGITS_TEST_SEED), so its test split is the same for every study seed.
    """
    if not 0.0 < cfg.val_fraction < 1.0:
        raise KDSearchError(f"val_fraction: must lie strictly between 0 and 1, got {cfg.val_fraction}")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    name, identity, decode = _source(cfg, root)
    arrays = cached(cfg.dataset, identity, decode, root)
    size = cfg.image_size
    if size and tuple(arrays["train_x"].shape[-2:]) != (size, size):  # resized once, then cached as its own source
        original = arrays
        arrays = cached(cfg.dataset, f"{identity} at {size}x{size}", lambda: resized(original, size), root)
    present = torch.unique(arrays["train_y"]).tolist()
    if len(present) < 2:
        names = ", ".join(str(arrays["classes"][i]) for i in present) or "none"
        raise KDSearchError(f"data {name} has {len(present)} class(es) with training images ({names}); a classifier "
                            "needs at least 2" + (" (one folder of images per class under train/)"
                                                  if cfg.dataset == "imagefolder" else ""))
    train, val = split_val(Split(arrays["train_x"], arrays["train_y"]), cfg.val_fraction, seed)
    mean, std = channel_stats(train.x)
    pad, flip = AUGMENT_DEFAULTS[cfg.dataset]
    return DataSplits(
        name=name, train=train, val=val, test=Split(arrays["test_x"], arrays["test_y"]),
        classes=list(arrays["classes"]), mean=mean, std=std,
        flip=flip if cfg.flip is None else cfg.flip, pad=pad if cfg.pad is None else cfg.pad,
    )


def _source(cfg: DataConfig, root: Path):
    """(DataSplits.name, cache identity, decode function) for the configured dataset."""
    if cfg.dataset == "digits":
        return "digits", "sklearn load_digits", _load_digits
    if cfg.dataset == "imagefolder":
        return imagefolder_source(cfg.data_dir, root, cfg.image_size)
    if cfg.dataset in TORCHVISION:
        tv_root = Path(cfg.data_dir).expanduser() if cfg.data_dir else root / "torchvision"
        return cfg.dataset, str(tv_root.resolve()), lambda: _load_torchvision(cfg.dataset, tv_root, cfg.download)
    raise KDSearchError(f"dataset: {cfg.dataset!r} is not one of {', '.join((*TORCHVISION, 'imagefolder', 'digits'))}")


def resized(arrays: Arrays, image_size: int | None) -> Arrays:
    """Arrays whose images are image_size x image_size ([data] image_size): an image folder is resized as it is
    decoded; the other datasets' decoded arrays here, bilinearly with antialiasing (as torchvision's Resize)."""
    if not image_size or arrays["train_x"].shape[-2:] == (image_size, image_size):
        return arrays

    def resize(x: torch.Tensor) -> torch.Tensor:
        chunks = [torch.nn.functional.interpolate(part.float(), size=(image_size, image_size), mode="bilinear",
                                                  antialias=True, align_corners=False).round().clamp(0, 255)
                  .to(torch.uint8) for part in x.split(4096)]  # in chunks: float copies of every image at once are big
        return torch.cat(chunks)

    return {**arrays, "train_x": resize(arrays["train_x"]), "test_x": resize(arrays["test_x"])}


def _load_torchvision(name: str, root: Path, download: bool) -> Arrays:
    import torchvision.datasets as tvd  # slow to import: only torchvision datasets need it

    made = new_folders(root) if download else None  # torchvision makes the folder before it downloads
    try:
        if name == "svhn":
            train, test = (tvd.SVHN(str(root), split=s, download=download) for s in ("train", "test"))
        else:
            cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
                   "fashion-mnist": tvd.FashionMNIST}[name]
            train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except (URLError, RuntimeError, OSError, ValueError, EOFError, tarfile.TarError) as exc:
        if made is not None:  # a failed download leaves no empty (or half-downloaded) data folder behind
            shutil.rmtree(made, ignore_errors=True)
        raise KDSearchError(_missing_message(name, root, download, exc)) from None
    if name == "svhn":  # data is already N x 3 x H x W; label 10 was mapped to digit 0 by torchvision
        return make_arrays(torch.from_numpy(train.data), torch.from_numpy(train.labels),
                       torch.from_numpy(test.data), torch.from_numpy(test.labels), [str(i) for i in range(10)])
    if name in ("mnist", "fashion-mnist"):  # data: N x 28 x 28 uint8 tensor
        return make_arrays(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets, train.classes)
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731  cifar data is N x H x W x C
    return make_arrays(nchw(train.data), torch.tensor(train.targets), nchw(test.data), torch.tensor(test.targets),
                   train.classes)


# (classes, channels, image size) of the torchvision datasets: what a dry run builds the teacher for before a
# download has brought the data
SHAPES: dict[str, tuple[int, int, int]] = {"cifar10": (10, 3, 32), "cifar100": (100, 3, 32), "mnist": (10, 1, 28),
                                           "fashion-mnist": (10, 1, 28), "svhn": (10, 3, 32)}


def download_url(name: str) -> str:
    """The first file torchvision downloads for a dataset (the one a reachability check asks for)."""
    import torchvision.datasets as tvd  # slow to import: only torchvision datasets need it

    if name == "svhn":
        return tvd.SVHN.split_list["train"][0]
    if name in ("mnist", "fashion-mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        return cls.mirrors[0] + cls.resources[0][0]
    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name].url


def download_problem(name: str, timeout: float = 10.0) -> str | None:
    """None when the dataset's download server answers a HEAD request for its file; else why not, in a few
    words (offline, a proxy, a moved file): a dry run says a run would fail rather than that it downloads."""
    import urllib.request  # only a dry run asks a server
    from urllib.error import HTTPError  # (the same)

    url = download_url(name)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except HTTPError as exc:  # the server answered: only a missing file is a problem (some refuse HEAD)
        return f"{url} answers HTTP {exc.code}" if exc.code in (404, 410) else None
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} cannot be reached ({' '.join(str(reason).split())[:120]})"


def _missing_message(name: str, root: Path, download: bool, exc: BaseException) -> str:
    """One line: what failed and the three ways around it."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
    how = f"could not be downloaded (offline? {reason})" if download else f"download is off ({reason})"
    return (f"{name} is not in {root} and {how}: pass --data-dir with the torchvision files, "
            "or use --dataset imagefolder --data-dir DIR (a folder or .tar.gz with train/ and test/), "
            "or --dataset digits (bundled)")


def _load_digits() -> Arrays:
    """sklearn's bundled 8x8 digits (0..16 scaled to 0..255) with a fixed stratified 20% test split."""
    from sklearn.datasets import load_digits  # scikit-learn is slow to import: only digits needs it

    digits = load_digits()
    x = torch.from_numpy(np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.from_numpy(stratified_pick(y.numpy(), round(0.2 * len(y)), DIGITS_TEST_SEED))] = True
    return make_arrays(x[~is_test], y[~is_test], x[is_test], y[is_test], [str(i) for i in range(10)])
