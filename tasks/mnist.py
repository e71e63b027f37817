"""MNIST and Fashion-MNIST with the SGDOL authors' CNN (Zhuang, Cutkosky & Orabona, ICML 2019).

Model, batch size, epochs, input normalization and the "training loss" (the whole training set scored in
eval mode after each epoch) follow the authors' ``MNIST/`` example (github.com/zhenxun-zhuang/SGDOL).
The four IDX files are read directly (gzipped or not), from ``--data-dir`` itself or from torchvision's
``<dir>/MNIST/raw`` layout, and verified by the MD5 of their *decompressed* bytes: re-gzipped copies such
as the Debian package's (whose .gz checksums differ from torchvision's list) hold the same data.
"""
from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from repro.errors import UsageError
from repro.task import TASKS
from repro.tasks.images import ImageClassificationTask, shared_seed
from repro.data import DataError, bytes_md5, cache_root, check_md5
from repro.data import resolve_data_dir as find_data_folder

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxDataSpec:
    label: str
    env_var: str
    default_dir: str | None  # None: <cache folder>/<label in lower case>
    torchvision_class: str  # downloads into <dir>/<torchvision_class>/raw when files are missing
    content_md5: dict[str, str]  # file -> MD5 of the decompressed IDX bytes
    mean: float  # training-set pixel mean and std (pixels scaled to [0, 1])
    std: float
    install_hint: str = ""


DATASETS = {
    # MD5s of the original (uncompressed) files from yann.lecun.com, as listed by many loaders.
    "mnist": IdxDataSpec(
        label="MNIST", env_var="REPRO_MNIST_DIR", default_dir=None,
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

    getattr(tvd, spec.torchvision_class)(root=str(directory), train=True, download=True)


def resolve_data_dir(spec: IdxDataSpec, data_dir: str | None) -> Path:
    """The folder holding the four IDX files, downloaded if missing and online, MD5-verified."""
    directory = find_data_folder(
        data_dir, spec.env_var, spec.default_dir or cache_root() / spec.label.lower(), label=spec.label,
        missing=lambda d: [n for n in IDX_FILES if find_idx_file(d, n, spec.torchvision_class) is None],
        download=lambda d, names: _download(spec, d), advice=lambda d, names: _missing_message(spec, d, names))
    for name in IDX_FILES:
        path = find_idx_file(directory, name, spec.torchvision_class)
        try:
            actual = bytes_md5(read_idx_bytes(path))
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"cannot read {path}: {e}") from e
        check_md5(path, spec.content_md5[name], actual, what=f" {spec.label} {name} data with")
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


class SimpleConvNet(nn.Module):
    """The MoNNA authors' MNIST CNN (their ``simples-conv``, experiments/models/simples.py in
    LPD-EPFL/robust-collaborative-learning): conv 5x5 (20) -> max-pool 2 -> conv 5x5 (50) -> max-pool 2 -> fc 500 ->
    fc 10, ReLU after each conv and the first fc, no padding (28 -> 24 -> 12 -> 8 -> 4), no dropout. They end in
    log_softmax with the NLL loss; here the logits meet cross-entropy, the same loss."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass
class MNISTOptions:
    data_dir: str | None = None
    batch_size: int = 100  # per worker
    train_subset: int = 0  # > 0: train (and score "trainset") on a fixed random subset of this many images
    test_subset: int = 0  # > 0: score "test" on a fixed random subset of this many test images
    eval_batch_size: int = 1000


# Settings (recipes) live in repro/recipes/sgdol.py.


class IdxImageTask(ImageClassificationTask):
    """The SGDOL authors' CNN on an IDX data set, on the shared image-task base: training counts its running
    accuracy (``train_acc``, as on CIFAR); the paper's per-epoch training loss is an eval-mode pass over the whole
    training set, logged as ``trainset_loss`` / ``trainset_acc``."""

    Options = MNISTOptions
    dataset = "mnist"
    network = MNISTConvNet  # the model class
    metric_columns = ("train_acc", "trainset_loss", "trainset_acc", "test_loss", "test_acc")
    eval_splits = ("train", "trainset", "test")
    final_splits = ("train", "trainset", "test")
    subset_kind = "random"  # as the SGDOL runs always were: not class-balanced
    drop_last = False  # the authors' loader keeps the last partial batch

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
        super().__init__(options, rank, world_size, device)
        spec = DATASETS[self.dataset]
        directory = Path(options.data_dir or resolve_data_dir(spec, None))
        train_x, train_y = load_split(spec, directory, TRAIN_IMAGES, TRAIN_LABELS)
        test_x, test_y = load_split(spec, directory, TEST_IMAGES, TEST_LABELS)
        keep = self.subset(train_y, options.train_subset)
        self.train_x, self.train_y = train_x[keep].unsqueeze(1).to(device), train_y[keep].to(device)
        shard = self.eval_shard(self.subset(test_y, options.test_subset))
        self.eval_data = {"trainset": (self.eval_shard(self.train_x), self.eval_shard(self.train_y)),
                          "test": (test_x[shard].unsqueeze(1).to(device), test_y[shard].to(device))}
        self.set_epoch_size(len(self.train_y))
        self.set_normalization((spec.mean,), (spec.std,))
        self.model = self.network().to(device)
        self.data_seed = shared_seed()  # after the model, as always for these tasks: the same init and data order


@TASKS.register("convnet-mnist")
class MNISTConvNetTask(IdxImageTask):
    description = "SGDOL authors' CNN on MNIST (torchvision download when online)"
    dataset = "mnist"


@TASKS.register("convnet-fashion-mnist")
class FashionMNISTConvNetTask(IdxImageTask):
    description = "SGDOL authors' CNN on Fashion-MNIST (Debian dataset-fashion-mnist files)"
    dataset = "fashion-mnist"


@TASKS.register("simple-conv-mnist")
class SimpleConvMNISTTask(IdxImageTask):
    description = "MoNNA authors' small CNN (simples-conv) on MNIST (robust collaborative learning)"
    dataset = "mnist"
    network = SimpleConvNet
