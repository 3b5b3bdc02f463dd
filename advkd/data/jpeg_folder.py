"""Tiny ImageNet in its original ``tiny-imagenet-200`` layout: the fixed file order, JPEG
decoding, and the safetensors cache that makes every later load a single read.

The cache carries a fingerprint of the class list and annotations, so a changed folder is
decoded again rather than served stale.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from advkd.core.errors import AdvkdError
from advkd.data.batches import TensorData

__all__ = ["CACHE_VERSION", "tiny_file_list", "decode_all", "save_atomic", "load_cache", "tinyimagenet_cache_path"]

CACHE_VERSION = "1"


def _is_jpeg(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in (".jpeg", ".jpg")


def tiny_file_list(root: Path, split: str) -> tuple[list[Path], list[int], str]:
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


def decode_all(files: list[Path]) -> torch.Tensor:
    """Decode in a thread pool (PIL releases the GIL while decoding) into one (N, 3, 64, 64) tensor."""
    import numpy as np

    out = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(pool.map(_decode_rgb64, files, chunksize=64)):
            out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that readers only ever see a complete file."""
    from advkd.core.files import save_tensors

    save_tensors(path, {k: v.contiguous() for k, v in tensors.items()}, metadata)


def load_cache(path: Path, fingerprint: str) -> TensorData | None:
    """The cached split, or None when absent, stale (lists changed) or unreadable."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fingerprint:
                return None
            data = TensorData(f.get_tensor("images"), f.get_tensor("labels"))
    except Exception as exc:  # truncated / foreign file: rebuild rather than fail
        warnings.warn(f"ignoring unreadable cache {path} ({exc}); decoding the JPEGs again", stacklevel=3)
        return None
    return data


def tinyimagenet_cache_path(data_dir: str | Path, split: str) -> Path:
    """Where the decoded ``split`` of Tiny ImageNet is cached."""
    return Path(data_dir).expanduser() / "tiny-imagenet-200" / f"advkd-cache-{split}.safetensors"
