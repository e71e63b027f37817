"""CIFAR-10/100 image classification: ResNet-20/32/44/56/110/218 on CIFAR-10 and DenseNet-BC-100 (k=12) on
CIFAR-100 -- the AdamW paper's (P2) benchmarks and CELGC's (P1) CIFAR-10 runs.

Data (option ``data_format``):
  * ``python`` (default): torchvision's CIFAR10/CIFAR100 (``cifar-10-python.tar.gz``), downloaded when online,
    MD5-checked by torchvision;
  * ``jpeg``: an ImageFolder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) or the offline
    ``cifar10-jpeg.tar.gz`` (MD5-checked, unpacked into the cache folder, never into the repository).
Either is decoded once before the workers start (see tasks/images.py). Training: per-worker equal shards of a
shared per-epoch permutation, full batches only, random crop (pad 4) + horizontal flip, per-channel
normalisation. Metrics: ``train_acc`` (running accuracy of the epoch's training batches, like ``train_loss``),
``test_loss`` and ``test_acc`` of the averaged model (the trainer synchronizes before evaluating).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from repro.errors import UsageError
from repro.task import TASKS
from repro.tasks.cifar_models import RESNET_DEPTHS, CifarResNet, DenseNetBC
from repro.data import DataError, cache_root
from repro.tasks.images import (ImageClassificationTask, ImageTensors, cache_imagefolder, find_tree_root, take,
                                random_crop_flip, shared_seed, unpack_verified)

DATA_FORMATS = ("python", "jpeg")


@dataclass(frozen=True)
class CifarData:
    name: str  # "cifar10" / "cifar100"
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    env_var: str
    jpeg_archive: str | None = None  # file name of a verified offline JPEG copy
    jpeg_md5: str | None = None


CIFAR10 = CifarData("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "REPRO_CIFAR10_DIR",
                    "cifar10-jpeg.tar.gz", "4525fa6bf275c7a753fb3748765c8a02")
CIFAR100 = CifarData("cifar100", 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), "REPRO_CIFAR100_DIR")


@dataclass
class CifarOptions:
    data_dir: str | None = None  # after prepare(): the folder of decoded train.pt / test.pt
    data_format: str = "python"  # python | jpeg (see module docstring)
    batch_size: int = 128  # per worker
    eval_batch_size: int = 500
    bn: bool = True  # False: the same network without any BatchNorm layer (the AdamW paper's main setting)
    train_subset: int = 0  # > 0: a fixed class-balanced subset of this many training images (quick presets)
    test_subset: int = 0  # > 0: likewise for the test set
    augment: bool = True
    # True: also score the whole training set each epoch (eval mode, no augmentation) with the evaluated model (the
    # workers' average): trainset_loss / trainset_acc, the CELGC authors' "training loss". train_loss stays the
    # running mean over the epoch's batches.
    score_trainset: bool = False
    # False: score the test split on the last row only (a 10,000-image pass costs about as much as training on
    # 3,000 images on a CPU; the quick presets' judged value is the final model's, after a decaying step size)
    test_every_epoch: bool = True


def _locate_python(data: CifarData, directory: Path) -> Path:
    """The folder torchvision's CIFAR loader reads (downloading when absent and online)."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if data.name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(directory), train=True, download=False)  # verifies every batch file's MD5
        return directory
    except RuntimeError:
        pass
    try:
        directory.mkdir(parents=True, exist_ok=True)
        cls(str(directory), train=True, download=True)
        return directory
    except Exception as e:  # offline, unwritable, corrupt: one line saying what to do
        hint = ""
        if data.jpeg_archive and ((directory / data.jpeg_archive).is_file() or find_tree_root(directory, ("train", "test"))):
            hint = "; a JPEG copy is there: add --set data_format=jpeg"
        raise DataError(f"{data.name} (python version, {cls.base_folder}/) not found or corrupt in {directory} and it "
                        f"could not be downloaded ({type(e).__name__}){hint}") from None


def _decode_python(data: CifarData, directory: Path) -> Path:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if data.name == "cifar10" else torchvision.datasets.CIFAR100
    out = cache_root() / "decoded" / f"{data.name}-python"
    if all((out / f"{s}.pt").is_file() for s in ("train", "test")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(directory), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        ImageTensors(images, torch.tensor(ds.targets), list(ds.classes)).save(out / f"{split}.pt")
    return out


def _locate_jpeg(data: CifarData, directory: Path) -> Path:
    """An ImageFolder tree with train/ and test/: ``directory`` itself (or a sub-folder), or the verified
    offline archive (``directory`` may be the archive or the folder holding it), unpacked into the cache."""
    archive = None
    if directory.is_file():
        archive = directory
    elif data.jpeg_archive and (directory / data.jpeg_archive).is_file():
        archive = directory / data.jpeg_archive
    if archive is not None:
        unpacked = unpack_verified(archive, data.jpeg_md5 if archive.name == data.jpeg_archive else None,
                                   f"{data.name}-jpeg")
        directory = unpacked
    tree = find_tree_root(directory, ("train", "test")) if directory.is_dir() else None
    if tree is None:
        what = f"{data.jpeg_archive} or " if data.jpeg_archive else ""
        raise DataError(f"no {data.name} JPEG data in {directory}: put {what}an ImageFolder tree "
                        f"(train/<class>/*.jpg, test/<class>/*.jpg) there")
    return tree


class CifarTask(ImageClassificationTask):
    """One CIFAR benchmark: ``data`` and ``build_model`` are set by the registered subclasses below."""

    Options = CifarOptions
    data: CifarData = CIFAR10
    build_model: Callable[[int, bool], torch.nn.Module]

    @classmethod
    def prepare(cls, options: CifarOptions) -> CifarOptions:
        if options.data_format not in DATA_FORMATS:
            raise UsageError(f"data_format must be one of {', '.join(DATA_FORMATS)}, got {options.data_format!r}")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(options, key) < 1:
                raise UsageError(f"{key.replace('_', '-')} must be >= 1, got {getattr(options, key)}")
        given = options.data_dir or os.environ.get(cls.data.env_var)
        directory = Path(given).expanduser() if given else cache_root() / cls.data.name
        if given and not directory.exists():
            raise DataError(f"data folder {directory} does not exist")
        if all((directory / f"{split}.pt").is_file() for split in ("train", "test")):
            # Already decoded: the data_dir a run recorded in config.json (resume, --from) is prepared again as is.
            return replace(options, data_dir=str(directory))
        if options.data_format == "python":
            decoded = _decode_python(cls.data, _locate_python(cls.data, directory))
        else:
            decoded = cache_imagefolder(_locate_jpeg(cls.data, directory), {"train": "train", "test": "test"})
        return replace(options, data_dir=str(decoded))

    def __init__(self, options: CifarOptions, rank: int, world_size: int, device: torch.device):
        super().__init__(options, rank, world_size, device)
        if options.data_dir is None or not (Path(options.data_dir) / "train.pt").is_file():
            raise DataError("CIFAR data not prepared: run through `repro run` (or call prepare() first)")
        self.data_seed = shared_seed()
        train = ImageTensors.load(Path(options.data_dir) / "train.pt")
        test = ImageTensors.load(Path(options.data_dir) / "test.pt")
        if len(train.classes) != self.data.num_classes:
            raise DataError(f"{options.data_dir} holds {len(train.classes)} classes, {self.data.name} has {self.data.num_classes}")
        keep = self.subset(train.labels, options.train_subset)
        self.train_x, self.train_y = take(train.images, keep).to(device), take(train.labels, keep).to(device)
        shard = self.eval_shard(self.subset(test.labels, options.test_subset))
        self.eval_data = {"test": (take(test.images, shard).to(device), take(test.labels, shard).to(device))}
        if options.score_trainset:
            self.eval_data["trainset"] = (self.eval_shard(self.train_x), self.eval_shard(self.train_y))
            self.eval_splits = self.final_splits = ("train", "trainset", "test")
            self.metric_columns = ("train_acc", "trainset_loss", "trainset_acc", "test_loss", "test_acc")
        if not options.test_every_epoch:
            self.eval_splits = tuple(s for s in self.eval_splits if s != "test")
        self.set_epoch_size(len(self.train_y))
        self.set_normalization(self.data.mean, self.data.std)
        self.model = self.build_model(self.data.num_classes, options.bn).to(device)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(images) if self.opts.augment else images


def _register(name: str, data: CifarData, builder, description: str) -> None:
    cls = type(name.replace("-", "_"), (CifarTask,), {
        "data": data, "build_model": staticmethod(builder), "description": description})
    TASKS.register(name, cls)


def _resnet(depth: int):
    return lambda num_classes, bn: CifarResNet(depth, num_classes, bn)


def _register_all() -> None:
    # Settings (recipes) live in repro/recipes/: adamw.py (P2) and celgc.py (P1).
    for depth in RESNET_DEPTHS:
        _register(f"resnet{depth}-cifar10", CIFAR10, _resnet(depth), f"ResNet-{depth} (option A) on CIFAR-10")
    _register("densenet100-cifar100", CIFAR100, lambda num_classes, bn: DenseNetBC(100, 12, num_classes, bn),
              "DenseNet-BC-100 (k=12) on CIFAR-100")


_register_all()
