"""MNIST and Fashion-MNIST with the SGDOL authors' CNN (Zhuang, Cutkosky & Orabona, ICML 2019).

Model, batch size, epochs, input normalization and the "training loss" (the whole training set scored in
eval mode after each epoch) follow the authors' ``MNIST/`` example (github.com/zhenxun-zhuang/SGDOL).
The four IDX files are read directly (gzipped or not), from ``--data-dir`` itself or from torchvision's
``<dir>/MNIST/raw`` layout, and verified by the MD5 of their *decompressed* bytes: re-gzipped copies such
as the Debian package's (whose .gz checksums differ from torchvision's list) hold the same data.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from repro.errors import UsageError
from repro.task import TASKS, Batch, Task
from repro.tasks.corpus import DataError

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxDataSpec:
    label: str
    env_var: str
    default_dir: str
    torchvision_class: str  # downloads into <dir>/<torchvision_class>/raw when files are missing
    content_md5: dict[str, str]  # file -> MD5 of the decompressed IDX bytes
    mean: float  # training-set pixel mean and std (pixels scaled to [0, 1])
    std: float
    install_hint: str = ""


DATASETS = {
    # MD5s of the original (uncompressed) files from yann.lecun.com, as listed by many loaders.
    "mnist": IdxDataSpec(
        label="MNIST", env_var="REPRO_MNIST_DIR", default_dir=str(Path.home() / ".cache" / "repro" / "mnist"),
        torchvision_class="MNIST",
        content_md5={TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb", TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
                     TEST_IMAGES: "2646ac647ad5339dbf082846283269ea", TEST_LABELS: "27ae3e4e09519cfbb04c329615203637"},
        mean=0.1307, std=0.3081),  # the authors' transforms.Normalize((0.1307,), (0.3081,))
    # Debian's dataset-fashion-mnist re-gzipped the files (gz MD5s differ from torchvision's list);
    # these content MD5s are those of the decompressed original release and of the Debian copy alike.
    "fashion-mnist": IdxDataSpec(
        label="Fashion-MNIST", env_var="REPRO_FASHION_MNIST_DIR", default_dir="/usr/share/datasets/fashion-mnist",
        torchvision_class="FashionMNIST",
        content_md5={TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a", TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
                     TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a", TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965"},
        mean=0.2860, std=0.3530,  # computed from the 60,000 training images
        install_hint="apt-get install dataset-fashion-mnist, or "),
}


def find_idx_file(directory: Path, name: str, torchvision_class: str) -> Path | None:
    for folder in (directory, directory / torchvision_class / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def parse_idx(data: bytes, source: Path | str = "IDX data") -> torch.Tensor:
    """An IDX file (the MNIST format: zero, zero, type code, rank, big-endian dims, data) of unsigned bytes."""
    if len(data) < 4 or data[0:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{source} is not an IDX file of unsigned bytes")
    rank = data[3]
    header = 4 + 4 * rank
    dims = struct.unpack(f">{rank}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise DataError(f"{source} is truncated: header says {dims}, found {len(data) - header} bytes of data")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*dims)


def _missing_message(spec: IdxDataSpec, directory: Path, missing: list[str]) -> str:
    return (f"{spec.label} not found in {directory} (missing {', '.join(missing)}): {spec.install_hint}put the four "
            f"IDX files ({', '.join(f + '.gz' for f in IDX_FILES)}) in --data-dir (or set {spec.env_var}), "
            f"or run once online to download them")


def _download(spec: IdxDataSpec, directory: Path) -> None:
    import torchvision.datasets as tvd

    directory.mkdir(parents=True, exist_ok=True)
    getattr(tvd, spec.torchvision_class)(root=str(directory), train=True, download=True)


def resolve_data_dir(spec: IdxDataSpec, data_dir: str | None) -> Path:
    """The folder holding the four IDX files, downloaded if missing and online, MD5-verified."""
    directory = Path(data_dir or os.environ.get(spec.env_var) or spec.default_dir).expanduser()
    missing = [n for n in IDX_FILES if find_idx_file(directory, n, spec.torchvision_class) is None]
    if missing:
        try:
            _download(spec, directory)
        except Exception as e:  # offline, HTTP error, read-only folder: same advice
            raise DataError(_missing_message(spec, directory, missing)) from e
        missing = [n for n in IDX_FILES if find_idx_file(directory, n, spec.torchvision_class) is None]
        if missing:
            raise DataError(_missing_message(spec, directory, missing))
    for name in IDX_FILES:
        path = find_idx_file(directory, name, spec.torchvision_class)
        try:
            actual = hashlib.md5(read_idx_bytes(path)).hexdigest()
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"cannot read {path}: {e}") from e
        if actual != spec.content_md5[name]:
            raise DataError(f"{path} holds data with md5 {actual}, expected {spec.content_md5[name]} for "
                            f"{spec.label} {name}: replace it with the original file")
    return directory


def load_split(spec: IdxDataSpec, directory: Path, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = parse_idx(read_idx_bytes(path := find_idx_file(directory, images, spec.torchvision_class)), path)
    y = parse_idx(read_idx_bytes(path := find_idx_file(directory, labels, spec.torchvision_class)), path)
    if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
        raise DataError(f"{spec.label} in {directory}: {images} and {labels} do not match ({tuple(x.shape)}, {tuple(y.shape)})")
    return x, y.long()


class MNISTConvNet(nn.Module):
    """conv 5x5 (32) -> max-pool 2 -> conv 5x5 (64) -> max-pool 2 -> fc 1024 -> dropout 0.5 -> fc 10,
    ReLU after each conv and the first fc; 'same' padding keeps 28 -> 14 -> 7."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(F.dropout(x, p=0.5, training=self.training))


@dataclass
class MNISTOptions:
    data_dir: str | None = None
    batch_size: int = 100  # per worker
    train_subset: int = 0  # > 0: train (and score "train") on a fixed random subset of this many images
    test_subset: int = 0  # > 0: score "test" on a fixed random subset of this many test images
    eval_batch_size: int = 1000


# The authors' MNIST/main.py defaults: 30 epochs, batch 100, seed 0, SGDOL with M = alpha = 10; the
# baselines' (sgd, adam, adagrad) default lr there is 1e-3 (sgdol ignores lr: it learns its stepsize).
_PAPER = dict(task=dict(batch_size=100), optimizer=dict(name="sgdol", smoothness=10.0, alpha=10.0, lr=1e-3),
              sync=dict(name="none"), train=dict(epochs=30, machines=1, seed=0))
# Laptop scale: the same model and batch on fixed subsets (6,000 training, 2,000 test images), 5 epochs
# (300 gradient evaluations; 150 SGDOL steps).
_QUICK = dict(task=dict(batch_size=100, train_subset=6000, test_subset=2000),
              optimizer=dict(name="sgdol", smoothness=10.0, alpha=10.0, lr=1e-3),
              sync=dict(name="none"), train=dict(epochs=5, machines=1, seed=0))


class IdxImageTask(Task):
    Options = MNISTOptions
    dataset = "mnist"
    metric_columns = ("train_eval_loss", "train_acc", "test_loss", "test_acc")
    eval_splits = ("train", "test")  # the paper plots training loss per epoch; test accuracy is cheap
    final_splits = ("train", "test")
    sample_unit = "img"
    presets = {"paper": _PAPER, "quick": _QUICK}

    @classmethod
    def parse_options(cls, values: dict) -> MNISTOptions:
        options = super().parse_options(values)
        for name in ("batch_size", "eval_batch_size"):
            if not (isinstance(getattr(options, name), int) and getattr(options, name) >= 1):
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= 1, got {getattr(options, name)}")
        for name, size in (("train_subset", 60000), ("test_subset", 10000)):
            value = getattr(options, name)
            if not (isinstance(value, int) and 0 <= value <= size):
                raise UsageError(f"{name} must be an integer in 0..{size} (0 = all), got {value}")
        return options

    @classmethod
    def prepare(cls, options: MNISTOptions) -> MNISTOptions:
        return replace(options, data_dir=str(resolve_data_dir(DATASETS[cls.dataset], options.data_dir)))

    def __init__(self, options: MNISTOptions, rank: int, world_size: int, device: torch.device):
        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        spec = DATASETS[self.dataset]
        directory = Path(options.data_dir or resolve_data_dir(spec, None))
        train_x, train_y = load_split(spec, directory, TRAIN_IMAGES, TRAIN_LABELS)
        test_x, test_y = load_split(spec, directory, TEST_IMAGES, TEST_LABELS)
        # Fixed seed, not the run's: every run (and optimizer) sees the same images.
        if options.train_subset:
            keep = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:options.train_subset]
            train_x, train_y = train_x[keep], train_y[keep]
        if options.test_subset:
            keep = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))[:options.test_subset]
            test_x, test_y = test_x[keep], test_y[keep]
        self.mean, self.std = spec.mean, spec.std
        self.data = {"train": (train_x.to(device), train_y.to(device)), "test": (test_x.to(device), test_y.to(device))}
        self.per_worker = len(train_x) // world_size  # equal shards: every worker takes as many steps
        if self.per_worker < 1:
            raise UsageError(f"{len(train_x)} training images cannot be shared among {world_size} workers")
        self.samples_per_epoch = self.per_worker * world_size
        self.model = MNISTConvNet().to(device)
        # Drawn after seeding with the run's seed, identically on every worker: one shuffle, split N ways.
        self.shuffle_seed = int(torch.randint(2**31 - 1, (1,)))

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255.0 - self.mean) / self.std).unsqueeze(1)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        images, labels = self.data["train"]
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.shuffle_seed + epoch))
        mine = order[self.rank * self.per_worker:(self.rank + 1) * self.per_worker].to(self.device)
        for start in range(0, self.per_worker, self.opts.batch_size):
            idx = mine[start:start + self.opts.batch_size]
            yield Batch((images[idx], labels[idx]), samples=len(idx))

    def training_loss(self, batch: Batch):
        images, labels = batch.data
        loss = F.cross_entropy(self.model(self._inputs(images)), labels)
        return loss, loss

    def eval_sums(self, split: str) -> torch.Tensor:
        """[summed loss, correct, count] over this worker's share (every world_size-th image) of ``split``."""
        images, labels = self.data[split]
        images, labels = images[self.rank::self.world], labels[self.rank::self.world]
        starts = range(0, len(images), self.opts.eval_batch_size)[:self.eval_batch_limit]  # smoke tests: a few
        loss, correct, count = 0.0, 0, 0
        for start in starts:
            x = self._inputs(images[start:start + self.opts.eval_batch_size])
            y = labels[start:start + self.opts.eval_batch_size]
            logits = self.model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        return torch.tensor([loss, correct, count], dtype=torch.float64)

    def eval_metrics(self, split: str, sums: torch.Tensor) -> dict[str, float]:
        loss, acc = float(sums[0] / sums[2]), float(sums[1] / sums[2])
        if split == "train":  # "train_loss" is the running minibatch loss (train mode); this is eval mode
            return {"train_eval_loss": loss, "train_acc": acc}
        return {f"{split}_loss": loss, f"{split}_acc": acc}

    def describe(self, train_loss: float) -> str:
        return f"loss {train_loss:.3f}"


@TASKS.register("convnet-mnist")
class MNISTConvNetTask(IdxImageTask):
    description = "SGDOL authors' CNN on MNIST (torchvision download when online)"
    dataset = "mnist"


@TASKS.register("convnet-fashion-mnist")
class FashionMNISTConvNetTask(IdxImageTask):
    description = "SGDOL authors' CNN on Fashion-MNIST (Debian dataset-fashion-mnist files)"
    dataset = "fashion-mnist"

