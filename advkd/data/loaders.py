"""Datasets as whole in-memory uint8 tensors (batching and augmentation: :mod:`advkd.data.batches`).

Small image datasets fit in memory (CIFAR train is 150 MB as uint8), so every split is loaded
once into a :class:`TensorData` and batches are cut with index tensors. That avoids DataLoader
worker processes and makes the order of every epoch a pure function of ``(seed, epoch, rank)``:
a run resumed at epoch ``e`` sees exactly the batches and augmentations of an uninterrupted run.

Nothing is read or generated at import time.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from advkd.data.batches import TensorData, crop_gather, derive_seed
from advkd.core.errors import AdvkdError
from advkd.core.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "TensorData",
    "load_split",
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

_TINY_CACHE_VERSION = "1"

#: A loader takes ``(split, data_dir, download, seed)`` and returns the whole split.
Loader = Callable[[str, Path, bool, int], "TensorData"]

DATASETS: Registry[Loader] = Registry("dataset")


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

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
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


def _get(d: dict, key: str):
    """Look a key up as bytes (Python-2 pickles read with encoding='bytes') or as str."""
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


class _Refused(pickle.UnpicklingError):
    """A CIFAR file asked for a global outside :func:`_cifar_globals`."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _plain_dtype(*args):
    """``numpy.dtype`` without object dtypes (an object array would unpickle arbitrary objects)."""
    import numpy as np

    dt = np.dtype(*args)
    if dt.hasobject:
        raise _Refused(f"numpy.dtype({args[0]!r}) (an object dtype)")
    return dt


def _cifar_globals() -> dict[tuple[str, str], object]:
    """Every global a CIFAR-10/100 python batch file may reference: numpy's array reconstruction
    (its numpy 1 and numpy 2 module names) and, for files re-written by Python 3 with protocol 2,
    the latin-1 bytes encoder. Genuine files hold dicts, lists, str/bytes, ints and one uint8 array."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class _CifarUnpickler(pickle.Unpickler):
    """Loads data, never code: ``find_class`` admits only :func:`_cifar_globals`."""

    def __init__(self, file, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _cifar_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {str(pid)[:40]!r}")


def _read_cifar_pickle(path: Path, label_key: str, num_classes: int, title: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR pickle -> (uint8 (n, 3, 32, 32), int64 (n,)); any malformation -> AdvkdError.

    Read with :class:`_CifarUnpickler`, so a crafted file cannot run code: anything that is not
    a plain CIFAR batch (dicts, lists, str/bytes, ints, numpy arrays) is refused by name.
    """
    import numpy as np

    if not path.is_file():
        raise AdvkdError(
            f"{title} file missing: {path}; the folder is incomplete — remove it and pass --download, "
            f"or point --data-dir / ADVKD_DATA_DIR at a complete copy"
        )
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(d, dict):
            raise TypeError(f"expected a dict, got {type(d).__name__}")
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, label_key), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
            raise ValueError(f"data shape {data.shape}, labels shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels outside [0, {num_classes})")
    except AdvkdError:
        raise
    except _Refused as exc:
        raise AdvkdError(f"{title} file {path} is not a CIFAR batch file: it references {exc}; refusing to load it "
                         f"(remove the folder and pass --download, or use a genuine copy)") from None
    except Exception as exc:  # UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError, ...
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise AdvkdError(f"{title} file {path} is corrupt or unreadable ({type(exc).__name__}: {detail}); "
                         f"remove the folder and pass --download") from exc
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels)


# -------------------- CIFAR-10 / CIFAR-100


@DATASETS.register("cifar10", help="CIFAR-10: 50k/10k 32x32 RGB images, 10 classes", num_classes=10, image_size=32)
def _load_cifar10(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    folder = data_dir / "cifar-10-batches-py"
    _ensure_folder("CIFAR-10", folder, download, CIFAR10_URL, CIFAR10_MD5)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_pickle(folder / n, "labels", 10, "CIFAR-10") for n in names]
    return TensorData(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


@DATASETS.register("cifar100", help="CIFAR-100: 50k/10k 32x32 RGB images, 100 fine classes",
                   num_classes=100, image_size=32)
def _load_cifar100(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    folder = data_dir / "cifar-100-python"
    _ensure_folder("CIFAR-100", folder, download, CIFAR100_URL, CIFAR100_MD5)
    images, labels = _read_cifar_pickle(folder / split, "fine_labels", 100, "CIFAR-100")
    return TensorData(images, labels)


# -------------------- Tiny ImageNet (original tiny-imagenet-200 layout, decoded once and cached as safetensors)


def _is_jpeg(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in (".jpeg", ".jpg")


def _tiny_file_list(root: Path, split: str) -> tuple[list[Path], list[int], str]:
    """(files, labels, fingerprint) in the fixed order: wnids.txt line order, then sorted file names
    for train; val_annotations.txt line order for test (so test index i is val_i.JPEG)."""
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        raise AdvkdError(f"Tiny ImageNet class list missing: {wnids_path}; the folder is incomplete")
    wnids_text = wnids_path.read_text()
    wnids = [w.strip() for w in wnids_text.splitlines() if w.strip()]
    if not wnids:
        raise AdvkdError(f"Tiny ImageNet class list {wnids_path} is empty")
    index = {w: i for i, w in enumerate(wnids)}
    h = hashlib.sha256(wnids_text.encode())
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for i, wnid in enumerate(wnids):
            d = root / "train" / wnid / "images"
            if not d.is_dir():
                raise AdvkdError(f"Tiny ImageNet train folder missing: {d}; the folder is incomplete")
            found = sorted((p for p in d.iterdir() if _is_jpeg(p)), key=lambda p: p.name)
            if not found:
                raise AdvkdError(f"no JPEG images in {d}")
            files += found
            labels += [i] * len(found)
            h.update(f"{wnid}:{len(found)}".encode())
    else:
        ann_path = root / "val" / "val_annotations.txt"
        img_dir = root / "val" / "images"
        if not ann_path.is_file():
            raise AdvkdError(f"Tiny ImageNet val annotations missing: {ann_path}; the folder is incomplete")
        ann_text = ann_path.read_text()
        h.update(ann_text.encode())
        for lineno, line in enumerate(ann_text.splitlines(), 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2 or cols[1].strip() not in index:
                raise AdvkdError(f"{ann_path} line {lineno}: expected 'filename<TAB>wnid' with a wnid from wnids.txt, "
                                 f"got {line.strip()[:80]!r}")
            p = img_dir / cols[0].strip()
            if not p.is_file():
                raise AdvkdError(f"Tiny ImageNet val image missing: {p}; the folder is incomplete")
            files.append(p)
            labels.append(index[cols[1].strip()])
        if not files:
            raise AdvkdError(f"{ann_path} lists no images")
    return files, labels, h.hexdigest()


def _decode_rgb64(path: Path):
    """One JPEG -> uint8 (64, 64, 3) array; undecodable or wrongly sized files are user errors."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # includes PIL.UnidentifiedImageError
        raise AdvkdError(f"cannot decode image {path} ({exc})") from exc
    if arr.shape != (64, 64, 3):
        raise AdvkdError(f"image {path} is {arr.shape[1]}x{arr.shape[0]}, expected 64x64 for Tiny ImageNet")
    return arr


def _decode_all(files: list[Path]) -> torch.Tensor:
    """Decode in a thread pool (PIL releases the GIL while decoding) into one (N, 3, 64, 64) tensor."""
    import numpy as np

    out = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(pool.map(_decode_rgb64, files, chunksize=64)):
            out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that readers only ever see a complete file."""
    from safetensors.torch import save_file

    from advkd.core.files import atomic_write_with

    atomic_write_with(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata))


def _load_cache(path: Path, fingerprint: str) -> TensorData | None:
    """The cached split, or None when absent, stale (lists changed) or unreadable."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("version") != _TINY_CACHE_VERSION or meta.get("fingerprint") != fingerprint:
                return None
            data = TensorData(f.get_tensor("images"), f.get_tensor("labels"))
    except Exception as exc:  # truncated / foreign file: rebuild rather than fail
        warnings.warn(f"ignoring unreadable cache {path} ({exc}); decoding the JPEGs again", stacklevel=3)
        return None
    return data


def tinyimagenet_cache_path(data_dir: str | Path, split: str) -> Path:
    """Where the decoded ``split`` of Tiny ImageNet is cached."""
    return Path(data_dir).expanduser() / "tiny-imagenet-200" / f"advkd-cache-{split}.safetensors"


@DATASETS.register("tinyimagenet", help="Tiny ImageNet: 100k/10k 64x64 RGB images, 200 classes (val = test)",
                   aliases=("tiny-imagenet", "tiny"), num_classes=200, image_size=64)
def _load_tinyimagenet(split: str, data_dir: Path, download: bool, seed: int) -> TensorData:
    root = data_dir / "tiny-imagenet-200"
    _ensure_folder("Tiny ImageNet", root, download, TINYIMAGENET_URL, TINYIMAGENET_MD5)
    files, labels, fingerprint = _tiny_file_list(root, split)
    cache = tinyimagenet_cache_path(data_dir, split)
    cached = _load_cache(cache, fingerprint)
    if cached is not None and len(cached) == len(files):
        return cached
    data = TensorData(_decode_all(files), torch.tensor(labels, dtype=torch.int64))
    try:
        _save_atomic({"images": data.images, "labels": data.labels}, cache,
                     {"version": _TINY_CACHE_VERSION, "fingerprint": fingerprint, "split": split})
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
