"""Image data for the classification tasks: finding, verifying and caching data sets, equal per-worker shards,
and batched CIFAR augmentation on tensors.

Small-image data sets (CIFAR-10/100, from torchvision's pickled batches or from an ImageFolder tree of image
files) are decoded once, in the launching process, into a cache folder of uint8 tensors (``train.pt``,
``test.pt``); each worker loads those, keeps them on its device and augments whole batches there, so no
DataLoader processes are needed on a 2-core CPU.
"""
from __future__ import annotations

from abc import abstractmethod

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from repro.task import Batch, Task
from repro.tasks.corpus import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
CACHE_VERSION = 1  # bump when the decoded-tensor layout changes


def cache_root() -> Path:
    """Where unpacked archives and decoded tensors live: $REPRO_CACHE_DIR, else ~/.cache/repro (never the repo)."""
    return Path(os.environ.get("REPRO_CACHE_DIR") or Path.home() / ".cache" / "repro").expanduser()


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack_verified(archive: Path, md5: str | None, name: str) -> Path:
    """Check ``archive``'s MD5 and unpack it once into the cache; returns the unpacked folder. A half-done
    unpack (crash, full disk) is never used: files go to a temporary folder that is renamed when complete."""
    if md5 is not None:
        actual = file_md5(archive)
        if actual != md5:
            raise DataError(f"{archive} has md5 {actual}, expected {md5}: replace it with the original archive")
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
        blob = torch.load(path, weights_only=True)
        return cls(blob["images"], blob["labels"], list(blob["classes"]))


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


def balanced_subset(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """A fixed (seeded, run-independent) subset of ``size`` indices with equal counts per class where possible."""
    if size <= 0 or size >= len(labels):
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    classes = labels.unique()
    per_class = size // len(classes)
    chosen = [order[labels[order] == c][:per_class] for c in classes]
    picked = torch.cat(chosen)
    if len(picked) < size:  # the remainder, from what is left, in the same fixed order
        rest = order[~torch.isin(order, picked)][: size - len(picked)]
        picked = torch.cat([picked, rest])
    return picked.sort().values


def shard_batches(n: int, batch_size: int, rank: int, world: int, seed: int) -> Iterator[torch.Tensor]:
    """This worker's batches of one epoch: a permutation shared by all workers (same ``seed``), cut into
    ``world`` equal shards, each cut into full batches (drop_last), so every worker takes the same number
    of steps."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    per_worker = n // world
    shard = perm[rank * per_worker:(rank + 1) * per_worker]
    for i in range(per_worker // batch_size):
        yield shard[i * batch_size:(i + 1) * batch_size]


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return (n // world) // batch_size


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
    """Shared by the image tasks: cross-entropy training that counts its own accuracy, and evaluation sums.

    Subclasses set ``self.model`` and ``self.device`` and implement ``train_batches`` and ``eval_batches(split)``
    (this worker's share of a split as (images, labels) pairs). The pseudo-split ``train`` reports the running
    accuracy of the training batches since the previous evaluation (like the trainer's ``train_loss``).
    """

    metric_columns = ("train_acc", "test_loss", "test_acc")
    eval_splits = ("train", "test")
    final_splits = ("train", "test")
    sample_unit = "img"

    def _reset_counts(self) -> None:
        self._correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self._seen = 0

    @abstractmethod
    def eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of this worker's shard of ``split``."""

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
        for n, (x, y) in enumerate(self.eval_batches(split)):
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
