"""Tests for advkd.data: loaders on fake on-disk folders, the real offline CIFAR-10 (when present),
synthetic data, augmentation against a slow reference, and deterministic batching/sharding."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from advkd.core.errors import AdvkdError
from advkd.data import loaders as D
from advkd.data.batches import TensorData, TrainBatches, augment_crop_flip, eval_batches, to_float
from advkd.data.loaders import DATASETS, dataset_info, load_split

# ---------------------------------------------------------------------------------------------
# Fake on-disk datasets
# ---------------------------------------------------------------------------------------------


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_rows(n: int, first_value: int) -> np.ndarray:
    """Rows whose every pixel of image i equals first_value + i, so order is checkable after loading;
    the R/G/B planes get +0/+1/+2 to check the channel layout."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        for ch in range(3):
            rows[i, ch * 1024:(ch + 1) * 1024] = first_value + i * 3 + ch
    return rows


def make_fake_cifar10(root: Path, per_batch: int = 4) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for b in range(1, 6):
        labels = [(b * 10 + i) % 10 for i in range(per_batch)]
        _write_pickle(d / f"data_batch_{b}", {b"data": _cifar_rows(per_batch, b * 20), b"labels": labels,
                                              b"batch_label": b"fake"})
    # str keys, like a pickle written by Python 3, must work too
    _write_pickle(d / "test_batch", {"data": _cifar_rows(3, 200), "labels": [7, 3, 5]})


def make_fake_cifar100(root: Path) -> None:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    _write_pickle(d / "train", {b"data": _cifar_rows(5, 0), b"fine_labels": [99, 0, 42, 7, 7],
                                b"coarse_labels": [1, 2, 3, 4, 5]})
    _write_pickle(d / "test", {b"data": _cifar_rows(2, 100), b"fine_labels": [3, 98], b"coarse_labels": [0, 0]})


TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # deliberately not sorted


def _color(label: int, k: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 30 + 50 * k, 200 - 60 * label)


def _write_jpeg(path: Path, color: tuple[int, int, int], size: int = 64, mode: str = "RGB") -> None:
    from PIL import Image

    img = Image.new("RGB", (size, size), color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format="JPEG", quality=95)


def make_fake_tiny(root: Path, per_class: int = 3) -> dict:
    t = root / "tiny-imagenet-200"
    (t / "val" / "images").mkdir(parents=True)
    (t / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for label, wnid in enumerate(TINY_WNIDS):
        d = t / "train" / wnid / "images"
        d.mkdir(parents=True)
        (t / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in reversed(range(per_class)):  # creation order must not matter; names sort as k
            _write_jpeg(d / f"{wnid}_{k}.JPEG", _color(label, k))
    # val: annotation order (not name order) defines the test order; one greyscale JPEG
    val = [("val_2.JPEG", 1), ("val_0.JPEG", 2), ("val_10.JPEG", 0), ("val_1.JPEG", 1)]
    lines = []
    for k, (name, label) in enumerate(val):
        _write_jpeg(t / "val" / "images" / name, _color(label, k), mode="L" if k == 3 else "RGB")
        lines.append(f"{name}\t{TINY_WNIDS[label]}\t0\t0\t63\t63")
    (t / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"val": val}


# ---------------------------------------------------------------------------------------------
# Registry and info
# ---------------------------------------------------------------------------------------------


def test_registry_and_info():
    assert set(DATASETS.names()) == {"cifar10", "cifar100", "tinyimagenet", "synthetic"}
    assert dataset_info("cifar10") == D.DatasetInfo("cifar10", 10, 32, 3)
    assert dataset_info("CIFAR100").num_classes == 100
    for alias in ("tiny", "tiny-imagenet", "Tiny_ImageNet", "tinyimagenet"):
        assert dataset_info(alias) == D.DatasetInfo("tinyimagenet", 200, 64, 3)
    assert dataset_info("synthetic") == D.DatasetInfo("synthetic", 10, 32, 3)
    with pytest.raises(AdvkdError, match="unknown dataset"):
        dataset_info("mnist")


def test_bad_split_is_user_error(tmp_path):
    with pytest.raises(AdvkdError, match="split"):
        load_split("synthetic", "val", tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------


def test_fake_cifar10(tmp_path):
    make_fake_cifar10(tmp_path)
    tr = load_split("cifar10", "train", tmp_path)
    assert tr.images.shape == (20, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.labels.dtype == torch.int64
    assert tr.labels.tolist() == [(b * 10 + i) % 10 for b in range(1, 6) for i in range(4)]
    # batch order 1..5, image order within a batch, R/G/B plane order
    assert tr.images[0, :, 0, 0].tolist() == [20, 21, 22]
    assert tr.images[1, :, 5, 7].tolist() == [23, 24, 25]
    assert tr.images[4, :, 31, 31].tolist() == [40, 41, 42]
    assert bool((tr.images[19] == tr.images[19, :, :1, :1]).all())
    te = load_split("cifar10", "test", str(tmp_path))
    assert te.labels.tolist() == [7, 3, 5] and te.images.shape == (3, 3, 32, 32)
    assert te.images[2, :, 3, 3].tolist() == [206, 207, 208]


def test_fake_cifar100(tmp_path):
    make_fake_cifar100(tmp_path)
    tr = load_split("cifar100", "train", tmp_path)
    assert tr.labels.tolist() == [99, 0, 42, 7, 7] and tr.images.shape == (5, 3, 32, 32)
    te = load_split("cifar100", "test", tmp_path)
    assert te.labels.tolist() == [3, 98] and te.images[1, :, 0, 0].tolist() == [103, 104, 105]


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("tiny", "tiny-imagenet-200")])
def test_missing_folder_names_path(tmp_path, name, folder):
    with pytest.raises(AdvkdError) as ei:
        load_split(name, "train", tmp_path / "nowhere", download=False)
    msg = str(ei.value)
    assert str(tmp_path / "nowhere" / folder) in msg and "--download" in msg and "\n" not in msg


def test_corrupt_or_incomplete_cifar(tmp_path):
    make_fake_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    (d / "data_batch_3").write_bytes(b"definitely not a pickle")
    with pytest.raises(AdvkdError, match="data_batch_3.*corrupt"):
        load_split("cifar10", "train", tmp_path)
    _write_pickle(d / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(AdvkdError, match="corrupt"):
        load_split("cifar10", "train", tmp_path)
    _write_pickle(d / "data_batch_3", {b"nodata": 1})
    with pytest.raises(AdvkdError, match="corrupt"):
        load_split("cifar10", "train", tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(AdvkdError, match="data_batch_3"):
        load_split("cifar10", "train", tmp_path)
    _write_pickle(d / "test_batch", {b"data": _cifar_rows(1, 0), b"labels": [10]})  # label out of range
    with pytest.raises(AdvkdError, match="corrupt"):
        load_split("cifar10", "test", tmp_path)


@pytest.fixture(scope="module")
def real_cifar10():
    root = os.environ.get("ADVKD_DATA_DIR")
    if not root or not (Path(root) / "cifar-10-batches-py").is_dir():
        pytest.skip("ADVKD_DATA_DIR unset or holds no cifar-10-batches-py")
    return load_split("cifar10", "train", root), load_split("cifar10", "test", root)


def test_real_cifar10(real_cifar10):
    tr, te = real_cifar10
    assert tr.images.shape == (50000, 3, 32, 32) and te.images.shape == (10000, 3, 32, 32)
    assert tr.images.dtype == torch.uint8 and tr.labels.dtype == torch.int64
    assert tr.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert te.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(tr.labels).tolist() == [5000] * 10
    assert torch.bincount(te.labels).tolist() == [1000] * 10
    mean = to_float(tr.images[:10000]).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01)  # channel order R, G, B


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------------------------


def test_fake_tinyimagenet_and_cache(tmp_path):
    info = make_fake_tiny(tmp_path)
    tr = load_split("tinyimagenet", "train", tmp_path)
    assert tr.images.shape == (9, 3, 64, 64) and tr.images.dtype == torch.uint8
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # wnids.txt line order, not sorted wnids
    for i, (label, k) in enumerate((lab, k) for lab in range(3) for k in range(3)):
        got = tr.images[i, :, 32, 32].to(torch.int32)
        assert (got - torch.tensor(_color(label, k))).abs().max() <= 3, (i, got)
    te = load_split("tiny-imagenet", "test", tmp_path)
    assert te.labels.tolist() == [lab for _, lab in info["val"]]
    assert te.images.shape == (4, 3, 64, 64)
    assert (te.images[0, :, 10, 10].to(torch.int32) - torch.tensor(_color(1, 0))).abs().max() <= 3
    grey = te.images[3, :, 10, 10]
    assert grey[0] == grey[1] == grey[2]  # greyscale JPEG converted to RGB

    t = tmp_path / "tiny-imagenet-200"
    caches = sorted(p.name for p in t.iterdir() if p.name.startswith("advkd-cache"))
    assert caches == ["advkd-cache-test.safetensors", "advkd-cache-train.safetensors"]  # no temp files left
    # second load comes from the cache: break the JPEGs and it must still give identical tensors
    for p in (t / "train").rglob("*.JPEG"):
        p.write_bytes(b"broken")
    tr2 = load_split("tiny", "train", tmp_path)
    assert torch.equal(tr2.images, tr.images) and torch.equal(tr2.labels, tr.labels)
    # changing the class list invalidates the cache (and now hits the broken JPEGs)
    (t / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")
    with pytest.raises(AdvkdError, match="cannot decode"):
        load_split("tiny", "train", tmp_path)


def test_tinyimagenet_corrupt_cache_is_rebuilt(tmp_path):
    make_fake_tiny(tmp_path, per_class=1)
    te = load_split("tiny", "test", tmp_path)
    cache = D.tinyimagenet_cache_path(tmp_path, "test")
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cache"):
        te2 = load_split("tiny", "test", tmp_path)
    assert torch.equal(te.images, te2.images) and torch.equal(te.labels, te2.labels)


def test_tinyimagenet_bad_annotations(tmp_path):
    make_fake_tiny(tmp_path, per_class=1)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(AdvkdError, match="val_annotations.txt line 1"):
        load_split("tiny", "test", tmp_path)
    ann.write_text("val_404.JPEG\tn01000000\t0\t0\t1\t1\n")
    with pytest.raises(AdvkdError, match="val_404.JPEG"):
        load_split("tiny", "test", tmp_path)


# ---------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_learnable(tmp_path):
    tr = load_split("synthetic", "train", tmp_path / "unused", seed=0)
    te = load_split("synthetic", "test", tmp_path / "unused", seed=0)
    assert tr.images.shape == (D.SYNTHETIC_TRAIN_SIZE, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert te.images.shape == (D.SYNTHETIC_TEST_SIZE, 3, 32, 32) and te.labels.dtype == torch.int64
    assert set(tr.labels.tolist()) == set(range(10))
    again = load_split("synthetic", "train", tmp_path, seed=0)
    assert torch.equal(again.images, tr.images) and torch.equal(again.labels, tr.labels)
    other = load_split("synthetic", "train", tmp_path, seed=1)
    assert not torch.equal(other.images, tr.images)
    assert not torch.equal(te.images, tr.images[: len(te)])

    # learnable: nearest class mean on raw pixels, means from train, scored on test
    xtr, xte = to_float(tr.images).flatten(1), to_float(te.images).flatten(1)
    means = torch.stack([xtr[tr.labels == c].mean(0) for c in range(10)])
    acc = (torch.cdist(xte, means).argmin(1) == te.labels).float().mean().item()
    assert acc > 0.5, acc
    # ... but no single pixel separates the classes (1-D nearest mean per pixel)
    per_pixel = ((xte[:, :, None] - means.T[None]) ** 2).argmin(2) == te.labels[:, None]
    assert per_pixel.float().mean(0).max().item() < 0.4
    # other seeds pose the same task: train-seed-0 means classify seed-1 test data too
    te1 = load_split("synthetic", "test", tmp_path, seed=1)
    acc1 = (torch.cdist(to_float(te1.images).flatten(1), means).argmin(1) == te1.labels).float().mean().item()
    assert acc1 > 0.5, acc1


# ---------------------------------------------------------------------------------------------
# TensorData, to_float
# ---------------------------------------------------------------------------------------------


def _toy(n: int = 10) -> TensorData:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return TensorData(images, torch.arange(n, dtype=torch.int64) % 3)


def test_head_and_to():
    d = _toy(10)
    assert d.head(None) is d
    h = d.head(4)
    assert len(h) == 4 and h.labels.tolist() == [0, 1, 2, 0] and torch.equal(h.images, d.images[:4])
    assert len(d.head(10)) == 10 and len(d.head(0)) == 0
    with pytest.raises(AdvkdError, match="11.*10"):
        d.head(11)
    with pytest.raises(AdvkdError):
        d.head(-1)
    m = d.to("cpu")
    assert torch.equal(m.images, d.images) and m.images.device.type == "cpu"
    with pytest.raises(ValueError):
        TensorData(d.images.float(), d.labels)


def test_to_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32 and y.tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert x.tolist() == [0, 51, 255]


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def _slow_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Reference: the documented draws, then a plain per-image loop (torchvision semantics)."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        p = torch.nn.functional.pad(x[i].float(), (padding,) * 4, value=0.0).to(x.dtype)
        oy, ox = int(offsets[i, 0]), int(offsets[i, 1])
        crop = p[:, oy:oy + h, ox:ox + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@pytest.mark.parametrize("dtype,padding", [(torch.uint8, 4), (torch.float32, 4), (torch.uint8, 2),
                                           (torch.float32, 0)])
def test_augment_matches_reference(dtype, padding):
    x = torch.randint(1, 256, (64, 3, 8, 10), generator=torch.Generator().manual_seed(1)).to(dtype)
    fast = augment_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(7))
    slow = _slow_crop_flip(x, padding, torch.Generator().manual_seed(7))
    assert fast.shape == x.shape and fast.dtype == x.dtype
    assert torch.equal(fast, slow)


def test_augment_zero_border_and_flip_rate():
    n = 4000
    x = torch.full((n, 3, 32, 32), 200, dtype=torch.uint8)
    x[:, :, :, :16] = 100  # left half darker, so flips are visible
    out = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    zeros = out == 0
    assert zeros.any()  # zero padding shows up ...
    assert bool(zeros[:, :, 4:28, 4:28].logical_not().all())  # ... but only within 4 px of the border
    assert bool(((out == 0) | (out == 100) | (out == 200)).all())
    flipped = (out[:, 0, 16, 14] == 200).float().mean().item()  # column 14 is dark unless flipped
    assert 0.45 < flipped < 0.55
    # every offset 0..8 occurs in both directions: (zero rows on top, at bottom, columns left, right)
    top, bottom = (out[:, 0, :4, 16] == 0).sum(1), (out[:, 0, 28:, 16] == 0).sum(1)
    left, right = (out[:, 0, 16, :4] == 0).sum(1), (out[:, 0, 16, 28:] == 0).sum(1)
    assert len(set(zip(top.tolist(), bottom.tolist()))) == 9
    assert len(set(zip(left.tolist(), right.tolist()))) == 9
    assert bool(((top == 0) | (bottom == 0)).all())


def test_augment_uses_global_rng_when_no_generator():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(3)
    a = augment_crop_flip(x)
    torch.manual_seed(3)
    b = augment_crop_flip(x)
    assert torch.equal(a, b)
    assert augment_crop_flip(x[:0]).shape == (0, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_augment_cuda_matches_cpu_with_cpu_generator():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    cpu = augment_crop_flip(x, generator=torch.Generator().manual_seed(5))
    gpu = augment_crop_flip(x.cuda(), generator=torch.Generator().manual_seed(5))
    assert torch.equal(cpu, gpu.cpu())
    g = torch.Generator(device="cuda").manual_seed(5)
    assert augment_crop_flip(x.cuda(), generator=g).device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


def _ids(x: torch.Tensor) -> list[int]:
    """Recover example ids from _toy images (constant per image; max survives crop/flip)."""
    return [round(v * 255) for v in x.flatten(1).max(1).values.tolist()]


def test_train_batches_deterministic_and_complete():
    d = _toy(10)
    tb = TrainBatches(d, 4, seed=123, augment=False)
    assert len(tb) == 3
    e0 = list(tb.epoch(0))
    assert [len(y) for _, y in e0] == [4, 4, 2]
    x, y = e0[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 3, 4, 4)
    ids0 = sum((_ids(x) for x, _ in e0), [])
    assert sorted(ids0) == list(range(10))
    assert all(d.labels[i].item() == lab for i, lab in zip(ids0, torch.cat([y for _, y in e0]).tolist()))
    # same (seed, epoch) -> same batches, even from a fresh object and a disturbed global RNG
    torch.manual_seed(999)
    again = list(TrainBatches(d, 4, seed=123, augment=False).epoch(0))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, again))
    ids1 = sum((_ids(x) for x, _ in tb.epoch(1)), [])
    assert ids1 != ids0 and sorted(ids1) == list(range(10))
    ids_other = sum((_ids(x) for x, _ in TrainBatches(d, 4, seed=124, augment=False).epoch(0)), [])
    assert ids_other != ids0
    assert len(TrainBatches(d, 4, seed=0, drop_last=True)) == 2
    assert [len(y) for _, y in TrainBatches(d, 4, seed=0, drop_last=True).epoch(0)] == [4, 4]


def test_train_batches_augmented_resume_identical():
    d = load_split("synthetic", "test", ".", seed=0).head(100)
    tb = TrainBatches(d, 32, seed=5, augment=True)
    full = [list(tb.epoch(e)) for e in range(3)]
    resumed = list(TrainBatches(d, 32, seed=5, augment=True).epoch(2))  # "resume" straight at epoch 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[2], resumed))
    assert not torch.equal(full[0][0][0], full[1][0][0])
    plain = list(TrainBatches(d, 32, seed=5, augment=False).epoch(2))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full[2], plain))  # augmentation keeps the order
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(full[2], plain))
    assert 0.0 <= full[0][0][0].min() and full[0][0][0].max() <= 1.0


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (10, 3), (2, 4)])
def test_train_batches_sharding(n, world):
    d = _toy(n)
    per_rank = [sum((_ids(x) for x, _ in TrainBatches(d, 3, seed=0, rank=r, world_size=world,
                                                     augment=False).epoch(4)), []) for r in range(world)]
    lens = {len(p) for p in per_rank}
    assert lens == {-(-n // world)}  # equal counts on every rank (padded by wrapping)
    assert len({len(TrainBatches(d, 3, seed=0, rank=r, world_size=world)) for r in range(world)}) == 1
    merged = sum(per_rank, [])
    assert set(merged) == set(range(n))
    assert len(merged) - len(set(merged)) == len(merged) - n  # duplicates only from padding
    # interleaving the shards rebuilds the single-process (world_size=1) permutation, padded
    single = TrainBatches(d, n, seed=0, augment=False).indices(4).tolist()
    inter = [per_rank[i % world][i // world] for i in range(len(merged))]
    assert inter[:n] == single


def test_eval_batches_order_and_sharding():
    d = _toy(11)
    out = list(eval_batches(d, 4))
    assert [len(i) for _, _, i in out] == [4, 4, 3]
    idx = torch.cat([i for _, _, i in out])
    assert idx.tolist() == list(range(11))
    assert sum((_ids(x) for x, _, _ in out), []) == list(range(11))
    assert torch.cat([y for _, y, _ in out]).tolist() == d.labels.tolist()
    x, y, i = out[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and i.dtype == torch.int64
    for world in (2, 3, 4, 16):
        shards = [torch.cat([i for _, _, i in eval_batches(d, 2, rank=r, world_size=world)] or
                            [torch.empty(0, dtype=torch.int64)]).tolist() for r in range(world)]
        assert sum(shards, []) == list(range(11))  # contiguous, in rank order, no padding
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        for r in range(world):  # indices match the images/labels served
            for x, y, i in eval_batches(d, 2, rank=r, world_size=world):
                assert _ids(x) == i.tolist() and torch.equal(y, d.labels[i])


# ---------------------------------------------------------------------------------------------
# Download path (no network: the torchvision downloader is replaced)
# ---------------------------------------------------------------------------------------------


def test_download_only_when_missing_and_errors_are_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url, download_root, md5=None, **kw):
        calls.append((url, download_root, md5))
        make_fake_cifar10(Path(download_root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    tr = load_split("cifar10", "train", tmp_path, download=True)
    assert len(tr) == 20
    assert calls == [(D.CIFAR10_URL, str(tmp_path), D.CIFAR10_MD5)]
    load_split("cifar10", "test", tmp_path, download=True)  # folder exists now: no second download
    assert len(calls) == 1

    def failing(url, download_root, md5=None, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", failing)
    with pytest.raises(AdvkdError, match="downloading CIFAR-100 .*network unreachable"):
        load_split("cifar100", "train", tmp_path, download=True)
    monkeypatch.setattr(tvu, "download_and_extract_archive", lambda *a, **k: None)  # "succeeds", no folder
    with pytest.raises(AdvkdError, match="tiny-imagenet-200"):
        load_split("tiny", "train", tmp_path, download=True)
