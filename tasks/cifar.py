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
from typing import Callable, Iterator

import torch

from repro.errors import UsageError
from repro.task import TASKS, Batch
from repro.tasks.cifar_models import RESNET_DEPTHS, CifarResNet, DenseNetBC
from repro.tasks.corpus import DataError
from repro.tasks.images import (ImageClassificationTask, ImageTensors, balanced_subset, batches_per_epoch,
                                cache_imagefolder, cache_root, find_tree_root, random_crop_flip, shard_batches,
                                unpack_verified)

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
        if options.data_format == "python":
            decoded = _decode_python(cls.data, _locate_python(cls.data, directory))
        else:
            decoded = cache_imagefolder(_locate_jpeg(cls.data, directory), {"train": "train", "test": "test"})
        return replace(options, data_dir=str(decoded))

    def __init__(self, options: CifarOptions, rank: int, world_size: int, device: torch.device):
        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        if options.data_dir is None or not (Path(options.data_dir) / "train.pt").is_file():
            raise DataError("CIFAR data not prepared: run through `repro run` (or call prepare() first)")
        # Drawn from the run seed, identically on every worker (all seed alike before the model is built),
        # so all workers cut the same permutation into disjoint shards.
        self.data_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        train = ImageTensors.load(Path(options.data_dir) / "train.pt")
        test = ImageTensors.load(Path(options.data_dir) / "test.pt")
        if len(train.classes) != self.data.num_classes:
            raise DataError(f"{options.data_dir} holds {len(train.classes)} classes, {self.data.name} has {self.data.num_classes}")
        keep = balanced_subset(train.labels, options.train_subset)
        self.train_x, self.train_y = train.images[keep].to(device), train.labels[keep].to(device)
        keep = balanced_subset(test.labels, options.test_subset)
        shard = keep[rank::world_size]  # evaluation: each worker scores its share, the trainer sums
        self.test_x, self.test_y = test.images[shard].to(device), test.labels[shard].to(device)
        n = len(self.train_y)
        if batches_per_epoch(n, options.batch_size, world_size) < 1:
            raise UsageError(f"{n} training images cannot give each of {world_size} workers a batch of {options.batch_size}")
        self.samples_per_epoch = batches_per_epoch(n, options.batch_size, world_size) * options.batch_size * world_size
        self.mean = torch.tensor(self.data.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.data.std, device=device).view(1, 3, 1, 1)
        self.model = self.build_model(self.data.num_classes, options.bn).to(device)
        self._reset_counts()

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        for idx in shard_batches(len(self.train_y), self.opts.batch_size, self.rank, self.world, self.data_seed + epoch):
            idx = idx.to(self.device)
            images = self.train_x[idx]
            if self.opts.augment:
                images = random_crop_flip(images)
            yield Batch((self._normalize(images), self.train_y[idx]), samples=len(idx))

    def eval_batches(self, split: str):
        for i in range(0, len(self.test_y), self.opts.eval_batch_size):
            yield self._normalize(self.test_x[i:i + self.opts.eval_batch_size]), self.test_y[i:i + self.opts.eval_batch_size]


# ---------------------------------------------------------------------------------------------------------
# Presets. P2 = Zhuang et al., AdamW through proximal methods and scale-freeness (authors' README commands);
# P1 = Liu et al., CELGC (paper text vs the authors' cifar10/scripts). Sources per value: docs/adamw.md,
# docs/celgc-cifar.md.

ADAMW_GRID = {"lr": (5e-5, 1e-4, 5e-4, 1e-3, 5e-3), "weight_decay": (0, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)}

# Best (lr, lambda) per (network, BN or not, loss multiplier) from the authors' README.
ADAMW_BEST = {
    ("resnet20", False, 1): {"adam-l2": (1e-3, 5e-4), "adamw": (1e-3, 5e-5)},
    ("resnet44", False, 1): {"adam-l2": (5e-4, 5e-4), "adamw": (5e-4, 5e-5)},
    ("resnet56", False, 1): {"adam-l2": (5e-4, 5e-4), "adamw": (5e-4, 5e-5)},
    ("resnet110", False, 1): {"adam-l2": (1e-3, 5e-4), "adamw": (5e-4, 1e-4)},
    ("resnet218", False, 1): {"adam-l2": (5e-4, 5e-3), "adamw": (5e-4, 5e-5)},
    ("resnet110", True, 1): {"adam-l2": (5e-3, 0.0), "adamw": (5e-3, 0.0)},
    ("resnet110", False, 10): {"adam-l2": (1e-3, 5e-3), "adamw": (5e-4, 1e-4)},
    ("resnet110", False, 100): {"adam-l2": (1e-4, 1e-1), "adamw": (5e-4, 1e-4)},
    ("densenet100", False, 1): {"adam-l2": (5e-4, 1e-3), "adamw": (1e-3, 5e-5)},
    ("densenet100", True, 1): {"adam-l2": (5e-3, 0.0)},
}

# CELGC on CIFAR-10 (P1). Paper text: ResNet-56, eta 0.3, gamma 1.0, local batch 64, eta and gamma / 10 at
# epochs 80 and 120, 8 machines. The authors' scripts (cifar10/scripts/GPUrun_*.sh): ResNet-32, eta 0.1,
# gamma 1.0, batch 16, weight decay 5e-4, momentum 0, same milestones, I = 2, 8 processes.
_CELGC_SCHEDULE = dict(name="step", milestones=(80, 120), gamma=0.1)


def celgc_preset(lr: float, batch_size: int, interval: int) -> dict:
    """P1's CIFAR-10 setting (BN kept: P1's ResNets have it)."""
    optimizer = dict(lr=lr, clip=1.0, momentum=0.0, weight_decay=5e-4)
    return dict(task=dict(bn=True, batch_size=batch_size), optimizer=dict(name="clipped-sgd", **optimizer),
                sync=dict(name="periodic", interval=interval), schedule=_CELGC_SCHEDULE,
                train=dict(epochs=200, machines=8, seed=0, loss_multiplier=1.0))


CELGC_PAPER = celgc_preset(lr=0.3, batch_size=64, interval=16)
CELGC_SCRIPTS = celgc_preset(lr=0.1, batch_size=16, interval=2)


def _variant(preset: dict) -> dict:
    """A whole preset as a per-optimizer variant of another (see runspec.resolve)."""
    return {section: {k: v for k, v in values.items() if k != "name" or section != "optimizer"}
            for section, values in preset.items()}


def adamw_preset(net: str, bn: bool, multiplier: int, epochs: int, batch_size: int = 128,
                 celgc_variant: dict | None = None, **task) -> dict:
    """P2's setting for one network; each Adam variant gets its own best (lr, lambda). ``celgc_variant``: the
    setting used when a P1 algorithm (optimizer clipped-sgd) is chosen with this preset."""
    best = ADAMW_BEST[(net, bn, multiplier)]
    lr, lam = best.get("adamw", best["adam-l2"])
    by_optimizer = {name: {"optimizer": dict(lr=lr_, weight_decay=lam_)} for name, (lr_, lam_) in best.items()}
    by_optimizer["adamprox"] = {"optimizer": dict(lr=lr, weight_decay=lam)}  # not tuned by the authors: AdamW's
    by_optimizer["clipped-sgd"] = _variant(celgc_variant or CELGC_PAPER)
    by_optimizer["sgd"] = {"optimizer": dict(lr=0.1, weight_decay=0.0)}  # e.g. P3's baseline: this preset, SGD
    return dict(task=dict(bn=bn, batch_size=batch_size, **task), optimizer=dict(name="adamw", lr=lr, weight_decay=lam),
                by_optimizer=by_optimizer, schedule=dict(name="constant"),
                train=dict(epochs=epochs, machines=1, seed=0, loss_multiplier=float(multiplier)), grid=ADAMW_GRID)


# quick: work a 2-core CPU finishes in minutes per cell: a fixed class-balanced subset of 2,000 training and
# 1,000 test images, no BN, constant step size, 6 epochs; batch 32 rather than 128, because a BN-free ResNet
# needs about a hundred steps to leave chance level and small batches buy more steps per image;
# (lr, lambda) as the paper's best ResNet-20 cell per optimizer. With a P1 algorithm (clipped-sgd): the
# 8,000 training images with BN (SGD at eta 0.1 diverges without it), 4 workers of local batch 32, I = 4, P1's
# eta 0.1 / gamma 1.0 / weight decay 5e-4 of the authors' scripts, constant step size, 6 epochs.
QUICK_CELGC = dict(task=dict(bn=True, batch_size=32, train_subset=8000), optimizer=dict(name="clipped-sgd", lr=0.1, clip=1.0, momentum=0.0,
                                                                      weight_decay=5e-4),
                   sync=dict(name="periodic", interval=4), schedule=dict(name="constant"),
                   train=dict(epochs=6, machines=4, seed=0, loss_multiplier=1.0))
QUICK = adamw_preset("resnet20", False, 1, epochs=6, batch_size=32, celgc_variant=QUICK_CELGC,
                     train_subset=2000, test_subset=1000)


def _register(name: str, data: CifarData, builder, description: str, presets: dict) -> None:
    cls = type(name.replace("-", "_"), (CifarTask,), {
        "data": data, "build_model": staticmethod(builder), "presets": presets, "description": description})
    TASKS.register(name, cls)


def _resnet(depth: int):
    return lambda num_classes, bn: CifarResNet(depth, num_classes, bn)


def _register_all() -> None:
    for depth in RESNET_DEPTHS:
        net = f"resnet{depth}"
        presets = {"quick": QUICK}
        if (net, False, 1) in ADAMW_BEST:
            presets["paper"] = adamw_preset(net, False, 1, epochs=300)
        if (net, True, 1) in ADAMW_BEST:
            presets["paper-bn"] = adamw_preset(net, True, 1, epochs=300)
        for mult in (10, 100):
            if (net, False, mult) in ADAMW_BEST:
                presets[f"paper-x{mult}"] = adamw_preset(net, False, mult, epochs=300)
        if depth == 32:
            presets["celgc-scripts"] = CELGC_SCRIPTS
        _register(f"{net}-cifar10", CIFAR10, _resnet(depth), f"ResNet-{depth} (option A) on CIFAR-10", presets)

    quick = dict(QUICK, task=dict(bn=False, batch_size=64, train_subset=2000, test_subset=1000))
    _register("densenet100-cifar100", CIFAR100, lambda num_classes, bn: DenseNetBC(100, 12, num_classes, bn),
              "DenseNet-BC-100 (k=12) on CIFAR-100",
              {"quick": quick, "paper": adamw_preset("densenet100", False, 1, epochs=300),
               "paper-bn": adamw_preset("densenet100", True, 1, epochs=300)})


_register_all()
