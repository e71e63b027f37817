"""Image classification: the one task base (``ImageClassificationTask``: evaluation loop, shards, subsets,
normalization), unpacking and caching image data sets, and batched CIFAR augmentation on tensors.

Small-image data sets (CIFAR-10/100, from torchvision's pickled batches or from an ImageFolder tree of image
files) are decoded once, in the launching process, into a cache folder of uint8 tensors (``train.pt``,
``test.pt``); each worker loads those, keeps them on its device and augments whole batches there, so no
DataLoader processes are needed on a 2-core CPU.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from repro.data import DataError, cache_root, check_md5, file_md5
from repro.errors import UsageError
from repro.task import Batch, Task

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
CACHE_VERSION = 1  # bump when the decoded-tensor layout changes


def unpack_verified(archive: Path, md5: str | None, name: str) -> Path:
    """Check ``archive``'s MD5 and unpack it once into the cache; returns the unpacked folder. A half-done
    unpack (crash, full disk) is never used: files go to a temporary folder that is renamed when complete."""
    if md5 is not None:
        check_md5(archive, md5, fix="replace it with the original archive")
    target = cache_root() / name / (md5 or file_md5(archive))
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # "data": no absolute paths, links out of the folder, devices
        os.replace(tmp, target)
    except FileExistsError:  # another process finished first
        pass
    except OSError as e:
        if not target.is_dir():
            raise DataError(f"cannot unpack {archive} into {target.parent}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_tree_root(folder: Path, splits: tuple[str, ...]) -> Path | None:
    """``folder`` or the single sub-folder of it that holds one folder per split (archives often add a level)."""
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if all((candidate / s).is_dir() for s in splits):
            return candidate
    return None


@dataclass
class ImageTensors:
    """A decoded split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), ``classes`` in label order."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save({"version": CACHE_VERSION, "images": self.images, "labels": self.labels, "classes": self.classes}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "ImageTensors":
        """Memory-mapped: the local workers of a run (and the cells of a sweep) share one read-only copy of the
        decoded images through the page cache instead of each holding its own (150 MB for CIFAR-10's training
        set). Pages are copy-on-write, so nothing a worker does can change the file."""
        blob = torch.load(path, weights_only=True, mmap=True)
        return cls(blob["images"], blob["labels"], list(blob["classes"]))


def take(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``data[indices]``, except that all of ``data`` in order is ``data`` itself: indexing would copy a
    memory-mapped set into private memory."""
    if len(indices) == len(data) and torch.equal(indices, torch.arange(len(data))):
        return data
    return data[indices]


def imagefolder_manifest(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names, as torchvision's ImageFolder) and (file, label) pairs in a fixed order."""
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image files>)")
    files = []
    for label, cls_name in enumerate(classes):
        for p in sorted((split_dir / cls_name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append((p, label))
    if not files:
        raise DataError(f"{split_dir} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return classes, files


def decode_imagefolder(split_dir: Path) -> ImageTensors:
    """Every image of an ImageFolder split as one uint8 tensor; all images must have the same size."""
    import numpy as np
    from PIL import Image

    classes, files = imagefolder_manifest(split_dir)
    arrays = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                arrays.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from e
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"images in {split_dir} differ in size ({', '.join(map(str, sorted(shapes)[:3]))}...); "
                        "this loader expects equal-size images such as CIFAR's 32x32")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor([label for _, label in files]), classes)


def tree_fingerprint(split_dirs: list[Path]) -> str:
    """Names, sizes and modification times of every file: changes whenever the tree's content may have."""
    h = hashlib.sha1(str(CACHE_VERSION).encode())
    for split_dir in split_dirs:
        _, files = imagefolder_manifest(split_dir)
        for path, label in files:
            st = path.stat()
            h.update(f"{path.relative_to(split_dir.parent)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_imagefolder(tree: Path, splits: dict[str, str]) -> Path:
    """Decode ``tree/<folder>/`` for each split -> ``<cache>/decoded/<fingerprint>/<split>.pt``; reused while the
    tree is unchanged. ``splits`` maps our split name to the tree's folder name."""
    dirs = {s: tree / folder for s, folder in splits.items()}
    out = cache_root() / "decoded" / tree_fingerprint(list(dirs.values()))
    if all((out / f"{s}.pt").is_file() for s in dirs):
        return out
    out.mkdir(parents=True, exist_ok=True)
    decoded = {s: decode_imagefolder(d) for s, d in dirs.items()}
    first = next(iter(decoded.values())).classes
    for s, t in decoded.items():
        if t.classes != first:
            raise DataError(f"class folders of {dirs[s]} differ from those of the other splits")
        t.save(out / f"{s}.pt")
    return out


SUBSET_KINDS = ("balanced", "random")


def subset_indices(labels: torch.Tensor, size: int, kind: str = "balanced", seed: int = 0) -> torch.Tensor:
    """A fixed (seeded, run-independent) subset of ``size`` indices; all of them when ``size`` <= 0.

    ``balanced`` (CIFAR, ImageNet): equal counts per class where possible, in index order (all when ``size`` >=
    the data set). ``random`` (MNIST, Fashion-MNIST): the first ``size`` of a seeded permutation, in that order.
    Each task keeps the kind it always used, so subset runs stay comparable with earlier ones."""
    if kind not in SUBSET_KINDS:
        raise ValueError(f"subset kind must be one of {SUBSET_KINDS}, got {kind!r}")
    if size <= 0 or (kind == "balanced" and size >= len(labels)):
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if kind == "random":
        return order[:size]
    classes = labels.unique()
    per_class = size // len(classes)
    chosen = [order[labels[order] == c][:per_class] for c in classes]
    picked = torch.cat(chosen)
    if len(picked) < size:  # the remainder, from what is left, in the same fixed order
        rest = order[~torch.isin(order, picked)][: size - len(picked)]
        picked = torch.cat([picked, rest])
    return picked.sort().values


def shared_seed() -> int:
    """A seed drawn from the run's RNG: identical on every worker (all seed alike before building the task), so
    all workers cut the same per-epoch permutation into disjoint shards."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def shard_batches(n: int, batch_size: int, rank: int, world: int, seed: int, drop_last: bool = True) -> Iterator[torch.Tensor]:
    """This worker's batches of one epoch: a permutation shared by all workers (same ``seed``), cut into
    ``world`` equal shards, each cut into batches; ``drop_last`` leaves out a shard's last partial batch. Every
    worker takes the same number of steps either way."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    per_worker = n // world
    shard = perm[rank * per_worker:(rank + 1) * per_worker]
    for i in range(batches_per_epoch(n, batch_size, world, drop_last)):
        yield shard[i * batch_size:(i + 1) * batch_size]


def batches_per_epoch(n: int, batch_size: int, world: int, drop_last: bool = True) -> int:
    per_worker = n // world
    return per_worker // batch_size if drop_last else -(-per_worker // batch_size)


def random_crop_flip(images: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-image random crop from the zero-padded image and random horizontal flip (uint8 or float, NCHW):
    torchvision's RandomCrop(size, padding) + RandomHorizontalFlip(), done for a whole batch at once."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dev = images.device
    top = torch.randint(0, 2 * padding + 1, (n,)).to(dev)
    left = torch.randint(0, 2 * padding + 1, (n,)).to(dev)
    flip = (torch.rand(n) < 0.5).to(dev)
    rows = top[:, None] + torch.arange(h, device=dev)  # (n, h)
    cols = left[:, None] + torch.arange(w, device=dev)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None]
    # (n, h, w, C) after advanced indexing on dims 0, 2, 3; back to NCHW.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class ImageClassificationTask(Task):
    """The one base of the image tasks: cross-entropy training that counts its own accuracy, one evaluation loop,
    one sharding (``shard_batches`` for training; every ``world``-th image of a split for evaluation), one subset
    choice (``subset_indices``) and one normalization (``normalize``: per-channel mean and std of [0, 1] pixels).

    Subclasses call ``super().__init__``, ``set_normalization`` and ``set_epoch_size``, and set ``self.model``.
    Data held in memory (MNIST, CIFAR) goes in ``train_x``/``train_y`` (uint8 NCHW images, int64 labels, on the
    device), ``eval_data`` (split -> this worker's shard, from ``eval_shard``) and ``data_seed``; the base then
    yields the batches. Tasks that stream from files (ImageNet) override ``train_batches`` and ``eval_loader``.

    Columns: ``train_acc`` is the running accuracy of the training batches since the previous evaluation (the
    pseudo-split ``train``, like the trainer's running ``train_loss``); ``<split>_loss``/``<split>_acc`` score a
    real split in eval mode.
    """

    metric_columns = ("train_acc", "test_loss", "test_acc")
    eval_splits = ("train", "test")
    final_splits = ("train", "test")
    sample_unit = "img"
    subset_kind = "balanced"  # see subset_indices
    drop_last = True  # full training batches only
    carried_state = ("_correct", "_seen")  # train_acc's running counts (a checkpoint between two steps keeps them)

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    data_seed: int

    def __init__(self, options, rank: int, world_size: int, device: torch.device):
        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        self._reset_counts()

    def subset(self, labels: torch.Tensor, size: int) -> torch.Tensor:
        return subset_indices(labels, size, self.subset_kind)

    def eval_shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This worker's share of a split (its indices, or its images or labels): each scores its share, the
        trainer sums."""
        return indices[self.rank::self.world]

    def set_epoch_size(self, n: int) -> None:
        """Training on ``n`` images: check every worker gets a batch and set ``samples_per_epoch``."""
        batches = batches_per_epoch(n, self.opts.batch_size, self.world, self.drop_last)
        if batches < 1:
            size = f" of {self.opts.batch_size}" if self.drop_last else ""
            raise UsageError(f"{n} training images cannot give each of {self.world} workers a batch{size}")
        per_worker = batches * self.opts.batch_size if self.drop_last else n // self.world
        self.samples_per_epoch = per_worker * self.world

    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels or floats already in [0, 1] (torchvision's ToTensor) -> per-channel standardized floats."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    takes_channels_last = True
    memory_format = torch.contiguous_format

    def use_channels_last(self) -> None:
        self.memory_format = torch.channels_last
        self.model.to(memory_format=torch.channels_last)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training-batch augmentation (uint8 NCHW on the device); none by default."""
        return images

    flips_labels = True  # the byzantine label-flip fault can train this task on flipped labels
    shard: torch.Tensor | None = None  # a partition's share of the training set (use_shard); None: iid per epoch

    def flip_labels(self) -> None:
        """Train on flipped labels from now on (label -> classes - 1 - label): a label-flipping faulty worker."""
        classes = int(self.train_y.max()) + 1
        self.train_y = classes - 1 - self.train_y

    def use_shard(self, indices) -> None:
        """Train on these samples only (this worker's share of a partition, repro.partition). Each epoch the share
        is reshuffled and cycled through, so every worker still takes the epoch's common number of steps."""
        self.shard = torch.as_tensor(indices, dtype=torch.int64)
        if len(self.shard) == 0:
            raise UsageError(f"worker {self.rank}'s share of the partition is empty")

    def _shard_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.data_seed + epoch + 7919 * (self.rank + 1))
        size = self.opts.batch_size
        need = batches_per_epoch(len(self.train_y), size, self.world, self.drop_last) * size
        rounds = -(-need // len(self.shard))
        order = torch.cat([self.shard[torch.randperm(len(self.shard), generator=generator)] for _ in range(rounds)])
        for i in range(0, need, size):
            yield order[i:i + size]

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        indices = shard_batches(len(self.train_y), self.opts.batch_size, self.rank, self.world,
                                self.data_seed + epoch, self.drop_last) if self.shard is None \
            else self._shard_batches(epoch)
        for idx in itertools.islice(indices, skip, None):
            idx = idx.to(self.device)
            yield Batch((self.normalize(self.augment(self.train_x[idx])), self.train_y[idx]), samples=len(idx))

    def batches_from(self, epoch: int, skip: int) -> Iterator[Batch]:
        return self.train_batches(epoch, skip)  # skips index batches only: no augmentation, no random numbers

    def eval_loader(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of this worker's shard of ``split``."""
        images, labels = self.eval_data[split]
        step = self.opts.eval_batch_size
        for i in range(0, len(labels), step):
            yield self.normalize(images[i:i + step]), labels[i:i + step]

    def _reset_counts(self) -> None:
        self._correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self._seen = 0

    def training_loss(self, batch: Batch):
        images, labels = batch.data
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():  # a device tensor: no host sync per step
            self._correct += (logits.argmax(1) == labels).sum()
        self._seen += len(labels)
        return loss, loss

    @torch.no_grad()
    def eval_sums(self, split: str) -> torch.Tensor:
        if split == "train":  # what training_loss counted since the last evaluation
            sums = torch.tensor([float(self._correct), float(self._seen)], dtype=torch.float64)
            self._reset_counts()
            return sums
        loss = correct = 0.0
        count = 0
        for n, (x, y) in enumerate(self.eval_loader(split)):
            limit = getattr(self, "eval_batch_limit", None)  # smoke tests may score only a few batches
            if limit is not None and n >= limit:
                break
            logits = self.model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            count += len(y)
        return torch.tensor([loss, correct, float(count)], dtype=torch.float64)

    def eval_metrics(self, split: str, sums: torch.Tensor) -> dict[str, float]:
        if split == "train":
            return {"train_acc": float(sums[0] / sums[1]) if sums[1] else float("nan")}
        if not sums[2]:
            return {f"{split}_loss": float("nan"), f"{split}_acc": float("nan")}
        return {f"{split}_loss": float(sums[0] / sums[2]), f"{split}_acc": float(sums[1] / sums[2])}

    def describe(self, train_loss: float) -> str:
        acc = float(self._correct) / self._seen if self._seen else 0.0
        return f"loss {train_loss:.3f} acc {acc:.3f}"
