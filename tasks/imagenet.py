"""ResNet-50 on ImageNet (ILSVRC-2012) with the standard ImageFolder pipeline.

``--data-dir`` is a folder with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the usual layout after
sorting the validation images into class folders). ImageNet cannot be downloaded automatically (it needs a
licence), so there is no checksum to verify; the folder layout is checked before workers start.
Training: RandomResizedCrop(224) + horizontal flip; evaluation: resize 256 + center crop 224; both
normalised with the usual ImageNet channel statistics (on the device, by the shared base). Each worker reads
its equal shard of a per-epoch permutation shared by all workers (full batches only), through a DataLoader (no
loader processes on CPU); each image's augmentation is seeded by (run, epoch, image), so a resumed epoch is exact.
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
from repro.tasks.resnet50 import resnet50
from repro.data import DataError
from repro.tasks.images import ImageClassificationTask, find_tree_root, shard_batches, shared_seed

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

        super().__init__(options, rank, world_size, device)
        self.data_seed = shared_seed()
        # Pixels to [0, 1] here; the base normalizes whole batches on the device.
        train_tf = transforms.Compose([transforms.RandomResizedCrop(options.crop), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor()])
        eval_tf = transforms.Compose([transforms.Resize(round(options.crop * 256 / 224)), transforms.CenterCrop(options.crop),
                                      transforms.ToTensor()])
        root = Path(options.data_dir)
        self.train_set = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        self.val_set = datasets.ImageFolder(str(root / "val"), transform=eval_tf)
        if self.train_set.classes != self.val_set.classes:
            raise DataError(f"class folders of {root / 'train'} and {root / 'val'} differ")
        self.train_index = self.subset(torch.tensor(self.train_set.targets), options.train_subset)
        self.val_index = self.eval_shard(self.subset(torch.tensor(self.val_set.targets), options.test_subset)).tolist()
        self.set_epoch_size(len(self.train_index))
        self.set_normalization(MEAN, STD)
        workers = options.loader_workers
        if workers < 0:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
            workers = min(8, max(1, (os.cpu_count() or 1) // local)) if device.type == "cuda" else 0
        self.loader_args = dict(num_workers=workers, pin_memory=device.type == "cuda")
        self.model = resnet50(num_classes=len(self.train_set.classes), bn=options.bn).to(device)

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        batches = [self.train_index[b].tolist() for b in shard_batches(
            len(self.train_index), self.opts.batch_size, self.rank, self.world, self.data_seed + epoch)][skip:]
        images_of_epoch = SeededAugmentation(self.train_set, self.data_seed, epoch)
        for images, labels in DataLoader(images_of_epoch, batch_sampler=batches, **self.loader_args):
            yield Batch((self.normalize(images.to(self.device, non_blocking=True)),
                         labels.to(self.device, non_blocking=True)), samples=len(labels))

    def batches_from(self, epoch: int, skip: int) -> Iterator[Batch]:
        return self.train_batches(epoch, skip)  # no image of a skipped batch is read

    def eval_loader(self, split: str):
        from torch.utils.data import DataLoader, Subset

        loader = DataLoader(Subset(self.val_set, self.val_index), batch_size=self.opts.eval_batch_size, **self.loader_args)
        for images, labels in loader:
            yield self.normalize(images.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True)


class SeededAugmentation(torch.utils.data.Dataset):
    """Each image's random crop and flip drawn from the torch RNG seeded by (the run's data seed, the epoch, the
    image's index): the same augmentation whichever loader process reads it, however many there are, and wherever a
    resumed epoch starts (a loader process's own stream depends on both)."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):  # the CPU generator only (torch.manual_seed would reseed CUDA's)
            torch.default_generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index))
                                                % 2 ** 63)
            return self.dataset[index]


TASKS.register("resnet50-imagenet", ImageNetTask)
