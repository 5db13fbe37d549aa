"""Datasets -> DataSplits: train / val / test as uint8 tensors held in memory.

Every dataset is decoded once into uint8 arrays and cached on disk; the validation split is
carved (stratified, seeded) from the training data, and the test split is only ever used for
final reports, never by the search.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from .config import DataConfig
from .errors import KDSearchError
from .files import atomic_path


@dataclass
class Split:
    x: torch.Tensor  # uint8, N x C x H x W
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataSplits:
    name: str
    train: Split  # training data minus the validation split (teachers train on all of it)
    val: Split  # carved from the training data; what the search optimizes
    test: Split  # the official test split: final reports only
    classes: list[str]
    mean: tuple[float, ...]  # per channel, of train pixels scaled to [0, 1]
    std: tuple[float, ...]
    flip: bool  # horizontal flip is a label-preserving augmentation for this data
    pad: int  # random-crop padding in pixels (0 = no crop augmentation)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Hash of the train/val content: keys teacher and logit caches."""
        h = hashlib.sha256()
        for split in (self.train, self.val):
            h.update(split.x.contiguous().numpy().tobytes())
            h.update(split.y.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


CACHE_FORMAT = 1  # bump when the cached dict changes: old cache files then never match a key
DIGITS_TEST_SEED = 0  # fixed, so the carved digits test split never depends on the study seed
TORCHVISION = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "expected train/<class>/<images> and test/<class>/<images> (or val/ instead of test/)"

# (pad, flip) when the config leaves them None; flip only where a mirror image keeps its label.
AUGMENT_DEFAULTS: dict[str, tuple[int, bool]] = {
    "cifar10": (4, True), "cifar100": (4, True), "imagefolder": (4, True), "svhn": (4, False),
    "mnist": (2, False), "fashion-mnist": (2, True), "digits": (1, False),
}

Arrays = dict  # train_x, train_y, test_x, test_y (tensors), classes (list[str]), format (int)


def cache_root() -> Path:
    """Where decoded arrays, extracted archives and torchvision downloads go ($KDSEARCH_CACHE)."""
    env = os.environ.get("KDSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdsearch"


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
    arrays = _cached(cfg.dataset, identity, decode, root)
    present = torch.unique(arrays["train_y"]).tolist()
    if len(present) < 2:
        names = ", ".join(str(arrays["classes"][i]) for i in present) or "none"
        raise KDSearchError(f"data {name} has {len(present)} class(es) with training images ({names}); a classifier "
                            "needs at least 2" + (" (one folder of images per class under train/)"
                                                  if cfg.dataset == "imagefolder" else ""))
    train, val = _split_val(Split(arrays["train_x"], arrays["train_y"]), cfg.val_fraction, seed)
    mean, std = _channel_stats(train.x)
    pad, flip = AUGMENT_DEFAULTS[cfg.dataset]
    return DataSplits(
        name=name, train=train, val=val, test=Split(arrays["test_x"], arrays["test_y"]),
        classes=list(arrays["classes"]), mean=mean, std=std,
        flip=flip if cfg.flip is None else cfg.flip, pad=pad if cfg.pad is None else cfg.pad,
    )


def stratified_subset(split: Split, n: int, seed: int) -> Split:
    """A seeded subset of n images with the class proportions of `split` (n <= 0 or n >= len: all).

    Every class keeps at least one image when n >= the number of classes; order is preserved.
    """
    if n <= 0 or n >= len(split):
        return split
    index = _stratified_pick(split.y.cpu().numpy(), n, seed)
    return _take(split, torch.from_numpy(index).to(split.y.device))


# ---------------------------------------------------------------- splitting and statistics


def _stratified_pick(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n items drawn per class in proportion to its size (largest remainder)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)
    for i in np.argsort(-(quota - np.floor(quota)), kind="stable"):  # hand out what rounding lost
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # the one-per-class floor overshot: trim the largest shares
        take[np.argmax(np.where(take > 1, take - quota, -np.inf))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.x[index], split.y[index])


def _split_val(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val): val is a stratified, seeded `fraction` of the official training data."""
    if len(split) < 2:
        raise KDSearchError(f"need at least 2 training images to carve a validation split, found {len(split)}")
    n_val = min(max(round(fraction * len(split)), 1), len(split) - 1)
    is_val = torch.zeros(len(split), dtype=torch.bool)
    is_val[torch.from_numpy(_stratified_pick(split.y.numpy(), n_val, seed))] = True
    return _take(split, ~is_val), _take(split, is_val)


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1], exact from 256-bin histograms (no float copy)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        mean.append(m)
        std.append(var ** 0.5)
    return tuple(mean), tuple(std)


# ---------------------------------------------------------------- decoded-array cache


def _cache_path(dataset: str, identity: str, root: Path) -> Path:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{dataset}|{identity}".encode()).hexdigest()[:16]
    return root / "arrays" / f"{dataset}-{digest}.pt"


def _cached(dataset: str, identity: str, decode, root: Path) -> Arrays:
    """Arrays from the cache when this exact source was decoded before, else decode and store."""
    path = _cache_path(dataset, identity, root)
    if path.is_file():
        try:
            arrays = torch.load(path, weights_only=True)
            if isinstance(arrays, dict) and arrays.get("format") == CACHE_FORMAT:
                return arrays
        except Exception:  # noqa: BLE001  a truncated or foreign file: decode again, overwrite it
            pass
    arrays = {**decode(), "format": CACHE_FORMAT}
    try:
        with atomic_path(path) as tmp:  # a reader never sees half a file
            torch.save(arrays, tmp)
    except OSError:
        pass  # a read-only cache only costs the next run a decode
    return arrays


def _arrays(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
            classes: list[str]) -> Arrays:
    return {"train_x": train_x.contiguous(), "train_y": train_y.to(torch.int64), "test_x": test_x.contiguous(),
            "test_y": test_y.to(torch.int64), "classes": [str(c) for c in classes]}


def _source(cfg: DataConfig, root: Path):
    """(DataSplits.name, cache identity, decode function) for the configured dataset."""
    if cfg.dataset == "digits":
        return "digits", "sklearn load_digits", _load_digits
    if cfg.dataset == "imagefolder":
        return _imagefolder_source(cfg.data_dir, root)
    if cfg.dataset in TORCHVISION:
        tv_root = Path(cfg.data_dir).expanduser() if cfg.data_dir else root / "torchvision"
        return cfg.dataset, str(tv_root.resolve()), lambda: _load_torchvision(cfg.dataset, tv_root, cfg.download)
    raise KDSearchError(f"dataset: {cfg.dataset!r} is not one of {', '.join((*TORCHVISION, 'imagefolder', 'digits'))}")


# ---------------------------------------------------------------- torchvision and digits


def _load_torchvision(name: str, root: Path, download: bool) -> Arrays:
    import torchvision.datasets as tvd

    try:
        if name == "svhn":
            train, test = (tvd.SVHN(str(root), split=s, download=download) for s in ("train", "test"))
        else:
            cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
                   "fashion-mnist": tvd.FashionMNIST}[name]
            train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except (URLError, RuntimeError, OSError, ValueError, EOFError, tarfile.TarError) as exc:
        raise KDSearchError(_missing_message(name, root, download, exc)) from None
    if name == "svhn":  # data is already N x 3 x H x W; label 10 was mapped to digit 0 by torchvision
        return _arrays(torch.from_numpy(train.data), torch.from_numpy(train.labels),
                       torch.from_numpy(test.data), torch.from_numpy(test.labels), [str(i) for i in range(10)])
    if name in ("mnist", "fashion-mnist"):  # data: N x 28 x 28 uint8 tensor
        return _arrays(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets, train.classes)
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731  cifar data is N x H x W x C
    return _arrays(nchw(train.data), torch.tensor(train.targets), nchw(test.data), torch.tensor(test.targets),
                   train.classes)


def _missing_message(name: str, root: Path, download: bool, exc: BaseException) -> str:
    """One line: what failed and the three ways around it."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
    how = f"could not be downloaded (offline? {reason})" if download else f"download is off ({reason})"
    return (f"{name} is not in {root} and {how}: pass --data-dir with the torchvision files, "
            "or use --dataset imagefolder --data-dir DIR (a folder or .tar.gz with train/ and test/), "
            "or --dataset digits (bundled)")


def _load_digits() -> Arrays:
    """sklearn's bundled 8x8 digits (0..16 scaled to 0..255) with a fixed stratified 20% test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.from_numpy(_stratified_pick(y.numpy(), round(0.2 * len(y)), DIGITS_TEST_SEED))] = True
    return _arrays(x[~is_test], y[~is_test], x[is_test], y[is_test], [str(i) for i in range(10)])


# ---------------------------------------------------------------- imagefolder (folder or archive)


def _imagefolder_source(data_dir: str | None, root: Path):
    if not data_dir:
        raise KDSearchError(f"imagefolder: give the folder or .tar.gz with --data-dir ({LAYOUT})")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise KDSearchError(f"imagefolder: {path} does not exist; {LAYOUT}")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise KDSearchError(f"imagefolder: {path} is neither a folder nor a .tar.gz archive; {LAYOUT}")
        st = path.stat()
        identity = f"archive|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return (f"imagefolder:{_archive_stem(path)}", identity,
                lambda: _decode_listing(_list_splits(_extract(path, root), path)))
    listing = _list_splits(path, path)  # listed once: keys the cache and, on a miss, is decoded
    return f"imagefolder:{path.resolve().name}", f"folder|{path.resolve()}|{_listing_digest(listing)}", \
        lambda: _decode_listing(listing)


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _extract(archive: Path, root: Path) -> Path:
    """Extract once into <root>/extracted/<stem>-<hash of path, size, mtime>/ and reuse it after."""
    st = archive.stat()
    digest = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = root / "extracted" / f"{_archive_stem(archive)}-{digest}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest.parent))
    try:
        from rich.console import Console

        with Console(stderr=True).status(f"extracting {archive.name}"), tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # "data" refuses absolute paths and links out of tmp
        os.rename(tmp, dest)  # a half-extracted folder is never mistaken for a finished one
    except (tarfile.TarError, OSError, EOFError) as exc:
        _remove_tree(tmp)
        if dest.is_dir():  # another process finished the same extraction first
            return dest
        raise KDSearchError(f"imagefolder: cannot extract {archive}: {exc}") from None
    return dest


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _split_dirs(folder: Path, shown: Path) -> tuple[Path, Path]:
    """(train dir, test dir) of an ImageFolder tree; also looks inside a single top-level folder."""
    if not (folder / "train").is_dir():
        subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1 and (subdirs[0] / "train").is_dir():
            folder = subdirs[0]
        else:
            raise KDSearchError(f"imagefolder: {shown} has no train/ folder; {LAYOUT}")
    for test_name in ("test", "val"):
        if (folder / test_name).is_dir():
            return folder / "train", folder / test_name
    raise KDSearchError(f"imagefolder: {shown} has train/ but neither test/ nor val/; {LAYOUT}")


def _list_images(split_dir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class folders (their order gives the labels) and every image file under each.

    Paths stay strings: building 60,000 Path objects costs a second on every (cached) load.
    """
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, name), followlinks=True):
            dirnames.sort()
            images = [f for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS)]
            items += [(os.path.join(dirpath, f), label) for f in images]
    if not items:
        raise KDSearchError(f"imagefolder: no images ({', '.join(IMG_EXTENSIONS)}) in the class folders of "
                            f"{split_dir}; {LAYOUT}")
    return classes, items


Listing = tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]  # classes, train, test items


def _list_splits(folder: Path, shown: Path) -> Listing:
    """(classes, train items, test items); train and test must have the same class folders."""
    train_dir, test_dir = _split_dirs(folder, shown)
    classes, train = _list_images(train_dir)
    test_classes, test = _list_images(test_dir)
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes)) or "-"
        only_test = sorted(set(test_classes) - set(classes)) or "-"
        raise KDSearchError(f"imagefolder: train/ and {test_dir.name}/ of {shown} have different class folders "
                            f"(only in train: {only_train}; only in {test_dir.name}: {only_test})")
    return classes, train, test


def _listing_digest(listing: Listing) -> str:
    """Hash of every file's path, label, size and mtime: any change to the images gives a new cache key."""
    lines = []
    for items in listing[1:]:
        for path, label in items:
            st = os.stat(path)
            lines.append(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _decode_listing(listing: Listing) -> Arrays:
    classes, train, test = listing
    pixels = _decode_images([p for p, _ in train] + [p for p, _ in test])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    y = torch.tensor([label for _, label in train] + [label for _, label in test], dtype=torch.int64)
    n = len(train)
    return _arrays(x[:n], y[:n], x[n:], y[n:], classes)


def _decode_images(paths: list[str]) -> np.ndarray:
    """PIL-decode into one N x H x W x C uint8 array; the first image sets the mode (L or RGB) and size."""
    from rich.console import Console

    from .progress import progress_bar

    mode, size = _open(paths[0], lambda img: ("L" if img.mode in ("1", "L", "LA") else "RGB", img.size))
    out = np.empty((len(paths), size[1], size[0], 1 if mode == "L" else 3), dtype=np.uint8)
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("decoding images", total=len(paths))
        for i, path in enumerate(paths):
            out[i] = _open(path, lambda img: _pixels(img, mode, size, path, paths[0])).reshape(out.shape[1:])
            if i % 1000 == 0:
                progress.update(task, completed=i)
    return out


def _open(path: str, use):
    """use(PIL image) while the file is open; unreadable files become a KDSearchError naming them."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return use(img)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KDSearchError(f"imagefolder: cannot decode {path}: {exc}") from None


def _pixels(img, mode: str, size: tuple[int, int], path: str, first: str) -> np.ndarray:
    if img.size != size:
        raise KDSearchError(f"imagefolder: {path} is {img.size[0]}x{img.size[1]} but {first} is {size[0]}x{size[1]}; "
                            "all images must share one size (resizing is not supported)")
    return np.asarray(img.convert(mode))
