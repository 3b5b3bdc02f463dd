"""Datasets as whole in-memory uint8 tensors (batching and augmentation: :mod:`advkd.data.batches`).

Small image datasets fit in memory (CIFAR train is 150 MB as uint8), so every split is loaded
once into a :class:`TensorData` and batches are cut with index tensors. That avoids DataLoader
worker processes and makes the order of every epoch a pure function of ``(seed, epoch, rank)``:
a run resumed at epoch ``e`` sees exactly the batches and augmentations of an uninterrupted run.

Nothing is read or generated at import time.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, PluginSource
from advkd.core.registry import Registry
from advkd.data.batches import TensorData, crop_gather, derive_seed
from advkd.data.cifar_pickle import read_cifar_pickle
from advkd.data.jpeg_folder import CACHE_VERSION, decode_all, load_cache, save_atomic, tiny_file_list, tinyimagenet_cache_path

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "TensorData",
    "load_split",
    "tinyimagenet_cache_path",
    "SYNTHETIC_TRAIN_SIZE",
    "SYNTHETIC_TEST_SIZE",
    "SYNTHETIC_NUM_CLASSES",
    "SYNTHETIC_IMAGE_SIZE",
]

SPLITS = ("train", "test")

#: Sizes of the file-free ``synthetic`` dataset; small so that smoke runs take seconds on a CPU.
SYNTHETIC_TRAIN_SIZE = 2048
SYNTHETIC_TEST_SIZE = 1000
SYNTHETIC_NUM_CLASSES = 10
SYNTHETIC_IMAGE_SIZE = 32

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

#: A loader takes ``(split, data_dir, download, seed)`` and returns the whole split.
Loader = Callable[[str, Path, bool, int], "TensorData"]

def adopt_dataset(registry: Any, name: str | None, loader: Any, origin: Any) -> tuple[str, dict[str, Any]]:
    """Check an outside dataset (``advkd.datasets`` entry point or ``module:attr``): a callable
    ``loader(split, data_dir, download, seed) -> TensorData`` ("train" / "test", the whole split in
    memory) with the attributes ``num_classes`` and ``image_size`` (``channels``: 3 unless set)."""
    if not callable(loader):
        raise AdvkdError(f"{origin.spec} is not a dataset loader: it must be a callable loader(split, data_dir, download, seed) -> TensorData")
    try:
        num_classes, image_size = int(loader.num_classes), int(loader.image_size)
        channels = int(getattr(loader, "channels", 3))
    except (AttributeError, TypeError, ValueError):
        raise AdvkdError(f"dataset loader {origin.spec} needs integer attributes num_classes and image_size") from None
    if min(num_classes, image_size, channels) < 1:
        raise AdvkdError(f"dataset loader {origin.spec}: num_classes, image_size and channels must be >= 1")
    key = registry.key(str(name or getattr(loader, "name", "") or getattr(loader, "__name__", "")))
    return key, {"num_classes": num_classes, "image_size": image_size, "channels": channels}


DATASETS: Registry[Loader] = Registry("dataset", PluginSource(GROUPS["dataset"], adopt_dataset))


# -------------------- Containers and info


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts a model builder needs before any data is read."""

    name: str
    num_classes: int
    image_size: int
    channels: int = 3


def dataset_info(name: str) -> DatasetInfo:
    """Class count and image geometry of a registered dataset (aliases accepted), without loading it."""
    entry = DATASETS.entry(name)
    return DatasetInfo(
        name=entry.name,
        num_classes=int(entry.meta["num_classes"]),
        image_size=int(entry.meta["image_size"]),
        channels=int(entry.meta.get("channels", 3)),
    )


def load_split(name: str, split: str, data_dir: str | Path, *, download: bool = False, seed: int = 0) -> TensorData:
    """Load a whole split (``"train"`` or ``"test"``) of a registered dataset into memory.

    ``seed`` only matters for ``synthetic``; file-backed datasets ignore it.
    """
    loader = DATASETS.get(name)  # AdvkdError listing valid names when unknown
    if split not in SPLITS:
        raise AdvkdError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(data_dir).expanduser()
    return loader(split, root, bool(download), int(seed))


# -------------------- Helpers shared by the file-backed loaders


def _not_found(title: str, path: Path) -> AdvkdError:
    return AdvkdError(
        f"{title} not found at {path}; pass --download, or point --data-dir / ADVKD_DATA_DIR "
        f"at the folder that holds it"
    )


def _download(title: str, url: str, md5: str | None, data_dir: Path) -> None:
    """Fetch and unpack an archive into ``data_dir``; network failures become one-line errors."""
    from torchvision.datasets.utils import download_and_extract_archive  # lazy: heavy import

    from advkd.core.files import make_dirs

    try:
        make_dirs(data_dir)
        download_and_extract_archive(url, download_root=str(data_dir), md5=md5)
    except Exception as exc:  # URLError, HTTPError, md5 mismatch (RuntimeError), disk errors
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AdvkdError(
            f"downloading {title} from {url} into {data_dir} failed ({msg}); "
            f"download and unpack it there by hand"
        ) from exc


def _ensure_folder(title: str, folder: Path, download: bool, url: str, md5: str | None) -> None:
    """Download only when the dataset folder is missing; never touch an existing one."""
    if folder.is_dir():
        return
    if not download:
        raise _not_found(title, folder)
    _download(title, url, md5, folder.parent)
    if not folder.is_dir():
        raise AdvkdError(f"{title} download finished but {folder} does not exist; unpack the archive there by hand")


# -------------------- CIFAR-10 / CIFAR-100


@DATASETS.register("cifar10", help="CIFAR-10: 50k/10k 32x32 RGB images, 10 classes", num_classes=10, image_size=32)
def _load_cifar10(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    folder = data_dir / "cifar-10-batches-py"
    _ensure_folder("CIFAR-10", folder, download, CIFAR10_URL, CIFAR10_MD5)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [read_cifar_pickle(folder / n, "labels", 10, "CIFAR-10") for n in names]
    return TensorData(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


@DATASETS.register("cifar100", help="CIFAR-100: 50k/10k 32x32 RGB images, 100 fine classes",
                   num_classes=100, image_size=32)
def _load_cifar100(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    folder = data_dir / "cifar-100-python"
    _ensure_folder("CIFAR-100", folder, download, CIFAR100_URL, CIFAR100_MD5)
    images, labels = read_cifar_pickle(folder / split, "fine_labels", 100, "CIFAR-100")
    return TensorData(images, labels)


# -------------------- Tiny ImageNet (advkd.data.jpeg_folder: the layout, decoding and the cache)


@DATASETS.register("tinyimagenet", help="Tiny ImageNet: 100k/10k 64x64 RGB images, 200 classes (val = test)",
                   aliases=("tiny-imagenet", "tiny"), num_classes=200, image_size=64)
def _load_tinyimagenet(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    root = data_dir / "tiny-imagenet-200"
    _ensure_folder("Tiny ImageNet", root, download, TINYIMAGENET_URL, TINYIMAGENET_MD5)
    files, labels, fingerprint = tiny_file_list(root, split)
    cache = tinyimagenet_cache_path(data_dir, split)
    cached = load_cache(cache, fingerprint)
    if cached is not None and len(cached) == len(files):
        return cached
    data = TensorData(decode_all(files), torch.tensor(labels, dtype=torch.int64))
    try:
        save_atomic({"images": data.images, "labels": data.labels}, cache,
                    {"version": CACHE_VERSION, "fingerprint": fingerprint, "split": split})
    except OSError as exc:  # read-only data folder: still usable, just slower next time
        warnings.warn(f"could not write cache {cache} ({exc}); Tiny ImageNet will be decoded again next time",
                      stacklevel=2)
    return data


# -------------------- Synthetic (no files; for smoke tests and CI)


def _synthetic(split: str, seed: int) -> TensorData:
    """Class = smooth random colour pattern; image = pattern shifted by up to 4 px, with random
    contrast/brightness and strong pixel noise. Learnable by a small CNN within an epoch, but no single
    pixel separates the classes. Prototypes depend only on the class (not on ``seed``), so every seed
    and split poses the same task; ``seed`` and ``split`` pick the samples."""
    k, s, shift = SYNTHETIC_NUM_CLASSES, SYNTHETIC_IMAGE_SIZE, 4
    big = s + 2 * shift
    protos = []
    for c in range(k):
        g = torch.Generator().manual_seed(derive_seed("advkd-synthetic-prototype", c))
        low = torch.randn(1, 3, 5, 5, generator=g)
        protos.append(torch.nn.functional.interpolate(low, size=(big, big), mode="bicubic", align_corners=False))
    proto = torch.cat(protos)                                                   # (K, 3, big, big)
    proto = (proto - proto.mean()) / proto.std()

    n = SYNTHETIC_TRAIN_SIZE if split == "train" else SYNTHETIC_TEST_SIZE
    g = torch.Generator().manual_seed(derive_seed("advkd-synthetic-sample", int(seed), split))
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=g)
    x = crop_gather(proto[labels], offsets[:, 0], offsets[:, 1], s, s)          # (N, 3, s, s)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 30.0 * torch.randn(n, 1, 1, 1, generator=g)
    noise = 40.0 * torch.randn(n, 3, s, s, generator=g)
    img = 128.0 + 45.0 * contrast * x + brightness + noise
    return TensorData(img.round().clamp_(0, 255).to(torch.uint8), labels.to(torch.int64))


@DATASETS.register("synthetic", help="generated 32x32 10-class data, no files (smoke tests)",
                   num_classes=SYNTHETIC_NUM_CLASSES, image_size=SYNTHETIC_IMAGE_SIZE)
def _load_synthetic(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    return _synthetic(split, seed)
