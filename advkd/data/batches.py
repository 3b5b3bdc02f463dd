"""Batches from in-memory uint8 datasets: deterministic order, tensor augmentation, sharding.

Every epoch's order and augmentation is a pure function of ``(seed, epoch, rank, world_size)``
(no DataLoader workers), so a resumed run sees exactly the batches of an uninterrupted one.
Augmentation is one gather per batch on the batch's device, with no per-image Python work.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from advkd.core.distributed import shard_bounds
from advkd.core.errors import AdvkdError

__all__ = ["to_float", "augment_crop_flip", "TrainBatches", "eval_batches", "derive_seed", "crop_gather"]


@dataclass
class TensorData:
    """A whole split in memory: uint8 images (N, C, H, W) and int64 labels (N,).

    uint8 keeps memory 4x smaller than float; conversion happens per batch (:func:`advkd.data.batches.to_float`).
    Float32 images in [0, 1] are accepted too (your own tensors, through :mod:`advkd.api`), used as they are.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype not in (torch.uint8, torch.float32) or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 or float32 in [0, 1], (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.dtype == torch.float32 and self.images.numel() and (self.images.min() < 0 or self.images.max() > 1):
            raise ValueError("float images must lie in [0, 1] (pixels; put normalisation inside the model: advkd.api.as_model)")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int | None) -> TensorData:
        """The first ``n`` examples in stored order (``None``: all), so subsets are reproducible."""
        if n is None:
            return self
        n = int(n)
        if n < 0:
            raise AdvkdError(f"number of examples must be >= 0, got {n}")
        if n > len(self):
            raise AdvkdError(f"asked for {n} examples but the split has only {len(self)}")
        return TensorData(self.images[:n], self.labels[:n])

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData(self.images.to(device), self.labels.to(device))


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any tuple of parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def crop_gather(padded: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image (h, w) windows at offsets (oy, ox) of ``padded`` (N, C, Hp, Wp), optionally
    mirrored left-right, with one gather instead of a Python loop over images."""
    n, c, hp, wp = padded.shape
    dev = padded.device
    rows = oy.to(dev).view(n, 1) + torch.arange(h, device=dev).view(1, h)        # (N, h)
    cols = ox.to(dev).view(n, 1) + torch.arange(w, device=dev).view(1, w)        # (N, w)
    if flip is not None:
        cols = torch.where(flip.to(dev).view(n, 1), cols.flip(1), cols)
    idx = (rows.view(n, h, 1) * wp + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, idx).view(n, c, h, w)


# ---------------------------------------------------------------------------------------------
# Conversion and augmentation
# ---------------------------------------------------------------------------------------------


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]: attacks and eps budgets work in [0, 1] pixel space
    (float images are already there and come back as they are)."""
    if images_uint8.is_floating_point():
        return images_uint8.to(torch.float32)
    return images_uint8.to(torch.float32).div_(255.0)


def augment_crop_flip(x: torch.Tensor, *, padding: int = 4,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomCrop(H, padding) with zero padding + horizontal flip (p=0.5), independently per image.

    Vectorised (one gather), so it costs nothing next to a forward pass on CPU or GPU. Random draws,
    in this order: ``offsets = randint(0, 2*padding+1, (N, 2))`` (column 0: row offset, column 1:
    column offset into the padded image), then ``flip = rand(N) < 0.5``. They come from ``generator``
    on its own device (then moved to ``x``'s), or from the global RNG of ``x``'s device when None.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    draw_dev = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=draw_dev)
    flip = torch.rand(n, generator=generator, device=draw_dev) < 0.5
    if n == 0:
        return x.clone()
    if padding:
        padded = x.new_zeros(n, c, h + 2 * padding, w + 2 * padding)
        padded[:, :, padding:padding + h, padding:padding + w] = x
    else:
        padded = x
    return crop_gather(padded, offsets[:, 0], offsets[:, 1], h, w, flip)


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


def epoch_batches(n: int, rank_batch: int, *, world_size: int = 1, drop_last: bool = False) -> int:
    """Batches per epoch on each rank: ``n`` examples padded to a multiple of ``world_size``, split
    across the ranks, in batches of ``rank_batch`` (the last one short unless ``drop_last``)."""
    per_rank = math.ceil(n / world_size)
    return per_rank // rank_batch if drop_last else math.ceil(per_rank / rank_batch)


class TrainBatches:
    """Deterministic shuffled batches: epoch ``e`` is a pure function of ``(seed, e, rank, world_size)``.

    Like DistributedSampler under ``world_size > 1``: every rank draws the same global permutation,
    pads it to a multiple of ``world_size`` by wrapping, and takes ``rank::world_size``, so all ranks
    get the same number of batches (collectives stay in step). ``drop_last`` drops each rank's final
    short batch.
    """

    def __init__(self, data: TensorData, batch_size: int, *, seed: int, augment: bool = True,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, resident: bool = True) -> None:
        if batch_size < 1:
            raise AdvkdError(f"batch size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world size {world_size}")
        if len(data) == 0:
            raise AdvkdError("cannot train on an empty dataset")
        self.device = torch.device(device)
        # uint8 on the device and augmented there (resident); or kept on the host, each batch
        # gathered into pinned memory and copied asynchronously, when the set should not occupy
        # device memory
        home = self.device if resident or self.device.type != "cuda" else torch.device("cpu")
        self.images = data.images.to(home)   # stays uint8; converted per batch
        self.labels = data.labels.to(home)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = drop_last
        self.num_samples = math.ceil(len(data) / self.world_size)   # per rank, after padding
        self.total_size = self.num_samples * self.world_size
        if drop_last and self.num_samples < self.batch_size:
            raise AdvkdError(f"batch size {batch_size} exceeds the {self.num_samples} examples per rank "
                             f"and drop_last is set, so an epoch would have no batches")

    def __len__(self) -> int:
        return epoch_batches(len(self.labels), self.batch_size, world_size=self.world_size, drop_last=self.drop_last)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's example indices for ``epoch``, in visiting order (CPU int64)."""
        n = len(self.labels)
        g = torch.Generator().manual_seed(derive_seed("advkd-train-perm", self.seed, int(epoch)))
        perm = torch.randperm(n, generator=g)
        if self.total_size > n:
            perm = perm.repeat(math.ceil(self.total_size / n))[: self.total_size]
        return perm[self.rank:: self.world_size]

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x float32 [0,1], y int64)`` on ``device`` for every batch of ``epoch``."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        idx = self.indices(epoch).to(self.images.device)
        gen = None
        if self.augment:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(derive_seed("advkd-train-aug", self.seed, int(epoch), self.rank))
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = self.images[sel], self.labels[sel]
            if x.device != self.device:
                x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
            if gen is not None:
                x = augment_crop_flip(x, generator=gen)
            yield to_float(x), y


def eval_batches(data: TensorData, batch_size: int, *, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x float32 [0,1], y int64, global indices int64)`` on ``device`` in stored order.

    Rank ``r`` gets the contiguous shard ``r`` of ``world_size`` near-equal shards (the first
    ``N % world_size`` shards hold one extra example), with no padding, so the ranks together cover
    every example exactly once and per-rank results concatenate in rank order.
    """
    if batch_size < 1:
        raise AdvkdError(f"batch size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    start, stop = shard_bounds(len(data), rank, world_size)
    dev = torch.device(device)
    for b in range(start, stop, batch_size):
        e = min(b + batch_size, stop)
        x = to_float(data.images[b:e].to(dev))
        yield x, data.labels[b:e].to(dev), torch.arange(b, e, device=dev)
