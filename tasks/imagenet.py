"""ResNet-50 on ImageNet (ILSVRC-2012) with the standard ImageFolder pipeline.

``--data-dir`` is a folder with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the usual layout after
sorting the validation images into class folders). ImageNet cannot be downloaded automatically (it needs a
licence), so there is no checksum to verify; the folder layout is checked before workers start.
Training: RandomResizedCrop(224) + horizontal flip; evaluation: resize 256 + center crop 224; both
normalised with the usual ImageNet channel statistics. Each worker reads its equal shard of a per-epoch
permutation shared by all workers (full batches only), through a DataLoader (no loader processes on CPU).
The ``test_*`` columns are the ImageNet validation set, which the papers report as test accuracy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from repro.errors import UsageError
from repro.task import TASKS, Batch
from repro.tasks.cifar_models import resnet50
from repro.tasks.corpus import DataError
from repro.tasks.images import ImageClassificationTask, balanced_subset, batches_per_epoch, find_tree_root, shard_batches

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ImageNetOptions:
    data_dir: str | None = None
    batch_size: int = 32  # per worker (8 x 32 = the standard 256)
    eval_batch_size: int = 100
    bn: bool = True
    crop: int = 224  # training crop and evaluation center crop; evaluation resizes to crop * 256 / 224 first
    loader_workers: int = -1  # DataLoader processes per worker; -1: none on CPU, min(8, cores per worker) on CUDA
    train_subset: int = 0  # > 0: a fixed class-balanced subset (smoke tests)
    test_subset: int = 0


class ImageNetTask(ImageClassificationTask):
    Options = ImageNetOptions
    description = "ResNet-50 on ImageNet (ImageFolder train/ and val/ in --data-dir)"
    # The standard recipe (He et al. 2016 / Goyal et al. 2017): SGD momentum 0.9, lr 0.1 per 256 images,
    # weight decay 1e-4, /10 at epochs 30, 60, 80, 90 epochs, 8 workers x 32.
    presets = {
        # quick: the same recipe on a fixed 10-images-per-class subset for 5 epochs (a pipeline check, not a result)
        "quick": dict(task=dict(batch_size=32, train_subset=10_000, test_subset=5_000),
                      optimizer=dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                      schedule=dict(name="constant"), train=dict(epochs=5, machines=1, seed=0)),
        "paper": dict(task=dict(batch_size=32), optimizer=dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                      schedule=dict(name="step", milestones=(30, 60, 80), gamma=0.1), train=dict(epochs=90, machines=8, seed=0)),
    }

    @classmethod
    def prepare(cls, options: ImageNetOptions) -> ImageNetOptions:
        given = options.data_dir or os.environ.get("REPRO_IMAGENET_DIR")
        if not given:
            raise DataError("ImageNet cannot be downloaded automatically: pass --data-dir with train/ and val/ "
                            "class folders (or set REPRO_IMAGENET_DIR)")
        directory = Path(given).expanduser()
        tree = find_tree_root(directory, ("train", "val")) if directory.is_dir() else None
        if tree is None:
            raise DataError(f"no ImageNet folders in {directory}: expected train/<class>/*.JPEG and val/<class>/*.JPEG")
        if options.crop < 8 or options.batch_size < 1 or options.eval_batch_size < 1:
            raise UsageError("crop must be >= 8 and batch sizes >= 1")
        return replace(options, data_dir=str(tree))

    def __init__(self, options: ImageNetOptions, rank: int, world_size: int, device: torch.device):
        from torchvision import datasets, transforms

        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        self.data_seed = int(torch.randint(0, 2**31 - 1, ()).item())  # identical on every worker
        normalize = transforms.Normalize(MEAN, STD)
        train_tf = transforms.Compose([transforms.RandomResizedCrop(options.crop), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), normalize])
        eval_tf = transforms.Compose([transforms.Resize(round(options.crop * 256 / 224)), transforms.CenterCrop(options.crop),
                                      transforms.ToTensor(), normalize])
        root = Path(options.data_dir)
        self.train_set = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        self.val_set = datasets.ImageFolder(str(root / "val"), transform=eval_tf)
        if self.train_set.classes != self.val_set.classes:
            raise DataError(f"class folders of {root / 'train'} and {root / 'val'} differ")
        self.train_index = balanced_subset(torch.tensor(self.train_set.targets), options.train_subset)
        val_index = balanced_subset(torch.tensor(self.val_set.targets), options.test_subset)
        self.val_index = val_index[rank::world_size].tolist()
        n = len(self.train_index)
        per_epoch = batches_per_epoch(n, options.batch_size, world_size)
        if per_epoch < 1:
            raise UsageError(f"{n} training images cannot give each of {world_size} workers a batch of {options.batch_size}")
        self.samples_per_epoch = per_epoch * options.batch_size * world_size
        workers = options.loader_workers
        if workers < 0:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
            workers = min(8, max(1, (os.cpu_count() or 1) // local)) if device.type == "cuda" else 0
        self.loader_args = dict(num_workers=workers, pin_memory=device.type == "cuda")
        self.model = resnet50(num_classes=len(self.train_set.classes), bn=options.bn).to(device)
        self._reset_counts()

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        batches = [self.train_index[b].tolist() for b in shard_batches(
            len(self.train_index), self.opts.batch_size, self.rank, self.world, self.data_seed + epoch)]
        for images, labels in DataLoader(self.train_set, batch_sampler=batches, **self.loader_args):
            yield Batch((images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)),
                        samples=len(labels))

    def eval_batches(self, split: str):
        from torch.utils.data import DataLoader, Subset

        loader = DataLoader(Subset(self.val_set, self.val_index), batch_size=self.opts.eval_batch_size, **self.loader_args)
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


TASKS.register("resnet50-imagenet", ImageNetTask)
