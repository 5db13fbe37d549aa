"""An image folder (or a .tar.gz of one) as arrays: train/<class>/ and test/<class>/ (or val/), decoded once.

Images are listed, decoded to one size and mode, and the listing's digest (with the size asked for)
keys the on-disk decode cache (data.datasets), so an unchanged folder is never decoded twice. Images
of mixed or non-square sizes need `image_size` ([data] image_size, --image-size): each is then
resized to image_size x image_size (stretched, not cropped: the whole image is kept).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from ..errors import KDSearchError
from ..progress import progress_bar
from ..runs.files import temp_folder
from .decode_cache import Arrays, make_arrays


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "expected train/<class>/<images> and test/<class>/<images> (or val/ instead of test/)"


def imagefolder_source(data_dir: str | None, root: Path, image_size: int | None = None):
    """(name, cache identity, decode function) of an image folder or archive; `image_size` resizes every image."""
    if not data_dir:
        raise KDSearchError(f"imagefolder: give the folder or .tar.gz with --data-dir ({LAYOUT})")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise KDSearchError(f"imagefolder: {path} does not exist; {LAYOUT}")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise KDSearchError(f"imagefolder: {path} is neither a folder nor a .tar.gz archive; {LAYOUT}")
        st = path.stat()
        identity = f"archive|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}" + _size_key(image_size)
        return (f"imagefolder:{_archive_stem(path)}", identity,
                lambda: _decode_listing(_list_splits(_extract(path, root), path), image_size))
    listing = _list_splits(path, path)  # listed once: keys the cache and, on a miss, is decoded
    identity = f"folder|{path.resolve()}|{_listing_digest(listing)}" + _size_key(image_size)
    return f"imagefolder:{path.resolve().name}", identity, lambda: _decode_listing(listing, image_size)


def _size_key(image_size: int | None) -> str:
    """The cache identity's part for resizing: none when images are kept as stored (old keys stay valid)."""
    return f"|resized {image_size}" if image_size else ""


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
    tmp = temp_folder(dest.parent, prefix=".partial-")
    try:
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


def _decode_listing(listing: Listing, image_size: int | None = None) -> Arrays:
    classes, train, test = listing
    pixels = _decode_images([p for p, _ in train] + [p for p, _ in test], image_size)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    y = torch.tensor([label for _, label in train] + [label for _, label in test], dtype=torch.int64)
    n = len(train)
    return make_arrays(x[:n], y[:n], x[n:], y[n:], classes)


def _decode_images(paths: list[str], image_size: int | None = None) -> np.ndarray:
    """PIL-decode into one N x H x W x C uint8 array; the first image sets the mode (L or RGB) and, unless
    `image_size` is given (every image resized to it), the size every other image must have."""
    mode, size = _open(paths[0], lambda img: ("L" if img.mode in ("1", "L", "LA") else "RGB", img.size))
    if image_size:
        size = (image_size, image_size)
    elif size[0] != size[1]:
        raise KDSearchError(f"imagefolder: {paths[0]} is {size[0]}x{size[1]}, not square: pass --image-size N "
                            "([data] image_size = N) to resize every image to N x N")
    out = np.empty((len(paths), size[1], size[0], 1 if mode == "L" else 3), dtype=np.uint8)
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("decoding images", total=len(paths))
        for i, path in enumerate(paths):
            out[i] = _open(path, lambda img: _pixels(img, mode, size, path, paths[0], bool(image_size))
                           ).reshape(out.shape[1:])
            if i % 1000 == 0:
                progress.update(task, completed=i)
    return out


def _open(path: str, use):
    """use(PIL image) while the file is open; unreadable files become a KDSearchError naming them."""
    try:
        with Image.open(path) as img:
            return use(img)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KDSearchError(f"imagefolder: cannot decode {path}: {exc}") from None


def _pixels(img, mode: str, size: tuple[int, int], path: str, first: str, resize: bool) -> np.ndarray:
    """The image's pixels in `mode` at `size` (resized when `resize`, else it must have that size)."""
    if img.size != size and not resize:
        raise KDSearchError(f"imagefolder: {path} is {img.size[0]}x{img.size[1]} but {first} is {size[0]}x{size[1]}: "
                            "pass --image-size N ([data] image_size = N) to resize every image to N x N")
    img = img.convert(mode)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)  # PIL filters over the whole footprint when shrinking
    return np.asarray(img)
