"""Image tasks: networks (BN removal, published parameter counts), ImageFolder data on a tiny tree written
here, shards, augmentation, and real `repro run` / `repro sweep` runs with 1 and 2 gloo workers."""
import json
import re
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_repro
from repro.errors import UsageError
from repro.task import Batch
from repro.tasks.cifar_models import CifarResNet, DenseNetBC
from repro.tasks.resnet50 import resnet50
from repro.data import DataError
from repro.tasks.images import ImageTensors, random_crop_flip, shard_batches, subset_indices
from repro.task import TASKS

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _bn_modules(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def image_tree(tmp_path, monkeypatch):
    """A CIFAR-like ImageFolder tree of 8x8 PNGs (lossless, so pixels can be checked): 10 classes, 6 training
    and 2 test images each; pixel values encode (class, index). The cache goes to tmp_path too."""
    from PIL import Image

    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    for split, count in (("train", 6), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((8, 8, 3), 20 * c + i, dtype=np.uint8)
                pixels[0, 0] = (i, c, 7)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_no_bn_networks_contain_no_batchnorm():
    for build in (lambda bn: CifarResNet(20, 10, bn), lambda bn: CifarResNet(56, 10, bn),
                  lambda bn: DenseNetBC(100, 12, 100, bn), lambda bn: resnet50(bn=bn)):
        assert _bn_modules(build(True))
        assert not _bn_modules(build(False))
        assert not [b for b in build(False).buffers()]  # no running statistics either


def test_parameter_counts_match_the_published_ones():
    assert _n_params(CifarResNet(20, 10)) == 269_722  # He et al. 2016: 0.27M
    assert _n_params(CifarResNet(56, 10)) == 853_018  # 0.85M
    assert round(_n_params(DenseNetBC(100, 12, 100)) / 1e6, 1) == 0.8  # Huang et al. 2017: 0.8M
    assert _n_params(CifarResNet(110, 10)) == 1_727_962  # 1.7M


def test_networks_run_on_cifar_sized_input():
    x = torch.randn(2, 3, 32, 32)
    assert CifarResNet(20, 10, bn=False)(x).shape == (2, 10)
    assert DenseNetBC(100, 12, 100, bn=False)(x).shape == (2, 100)
    with pytest.raises(ValueError):
        CifarResNet(21, 10)


def _prepare(tree, **options):
    cls = TASKS.get("resnet20-cifar10")
    return cls, cls.prepare(cls.parse_options({"data_format": "jpeg", "data_dir": str(tree), **options}))


def test_imagefolder_tree_is_decoded_in_class_order_with_exact_pixels(image_tree):
    cls, options = _prepare(image_tree)
    train = ImageTensors.load(f"{options.data_dir}/train.pt")
    assert train.classes == sorted(CLASSES) and train.images.shape == (60, 3, 8, 8)
    for k in range(60):
        c, i = int(train.labels[k]), k % 6
        assert train.images[k, :, 0, 0].tolist() == [i, c, 7]
        assert int(train.images[k, 0, 5, 5]) == 20 * c + i
    test = ImageTensors.load(f"{options.data_dir}/test.pt")
    assert test.labels.bincount().tolist() == [2] * 10
    # A second prepare reuses the cache; a changed tree gets a new one.
    assert _prepare(image_tree)[1].data_dir == options.data_dir
    (image_tree / "train" / "cat" / "0000.png").unlink()
    assert _prepare(image_tree)[1].data_dir != options.data_dir


def test_preparing_a_recorded_decoded_folder_again_keeps_it(image_tree):
    """A run records the decoded folder as its data_dir; `repro resume` and `--from` prepare that config again."""
    cls, options = _prepare(image_tree)
    again = cls.prepare(options)
    assert again.data_dir == options.data_dir


def test_archive_is_unpacked_into_the_cache_and_checked(image_tree, tmp_path):
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_tree, arcname="cifar10-jpeg")  # archives often add one folder level
    _, options = _prepare(archive)
    assert ImageTensors.load(f"{options.data_dir}/train.pt").images.shape[0] == 60
    assert (tmp_path / "cache" / "cifar10-jpeg").is_dir()
    fake = tmp_path / "fake" / "cifar10-jpeg.tar.gz"  # the official name: its MD5 must match
    fake.parent.mkdir()
    fake.write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match="md5"):
        _prepare(fake.parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cifar10 JPEG data"):
        _prepare(tmp_path / "empty")
    with pytest.raises(UsageError, match="data_format"):
        _prepare(image_tree, data_format="png")


def test_workers_get_equal_disjoint_shards_and_the_same_number_of_batches(image_tree):
    cls, options = _prepare(image_tree, batch_size=4)
    seen = []
    for rank in range(3):
        torch.manual_seed(5)  # the worker seeds every rank alike before building the task
        task = cls(options, rank=rank, world_size=3, device=torch.device("cpu"))
        batches = list(task.train_batches(epoch=2))
        assert len(batches) == 5 and all(b.samples == 4 for b in batches)  # 60 // 3 = 20 per worker
        seen.append(torch.cat([b.data[1] for b in batches]))
        assert task.samples_per_epoch == 60
    assert sum(len(s) for s in seen) == 60
    ids = [set(torch.cat(list(shard_batches(60, 4, r, 3, seed=9))).tolist()) for r in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and len(ids[0] | ids[1] | ids[2]) == 60
    first, second = list(shard_batches(60, 4, 0, 3, seed=1)), list(shard_batches(60, 4, 0, 3, seed=2))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # a new permutation each epoch


def test_resuming_mid_epoch_skips_index_batches_without_drawing_random_numbers(image_tree):
    cls, options = _prepare(image_tree, batch_size=4)
    task = cls(options, rank=1, world_size=3, device=torch.device("cpu"))
    torch.manual_seed(11)
    whole = list(task.train_batches(epoch=3))
    state = torch.get_rng_state()
    rest = task.batches_from(epoch=3, skip=2)
    assert torch.equal(torch.get_rng_state(), state)  # skipped batches were not made (no augmentation drawn)
    rest = list(rest)
    assert len(rest) == len(whole) - 2
    assert all(torch.equal(a.data[1], b.data[1]) for a, b in zip(rest, whole[2:]))  # the same images, in order


def test_subset_kinds_and_partial_last_batches():
    labels = torch.arange(100) % 10
    balanced = subset_indices(labels, 30)  # CIFAR, ImageNet
    assert torch.equal(balanced, balanced.sort().values) and torch.bincount(labels[balanced]).tolist() == [3] * 10
    random = subset_indices(labels, 30, "random")  # MNIST, Fashion-MNIST: a seeded permutation's prefix, in order
    assert torch.equal(random, torch.randperm(100, generator=torch.Generator().manual_seed(0))[:30])
    assert torch.equal(subset_indices(labels, 0, "random"), torch.arange(100))
    shards = [list(shard_batches(26, 4, r, 2, seed=3, drop_last=False)) for r in range(2)]
    assert [[len(b) for b in s] for s in shards] == [[4, 4, 4, 1]] * 2  # 13 each: the last batch kept
    assert [len(b) for b in shard_batches(26, 4, 0, 2, seed=3)] == [4, 4, 4]


@pytest.mark.data
def test_mnist_task_on_the_shared_image_base(fashion_mnist_dir):
    cls = TASKS.get("convnet-fashion-mnist")
    options = cls.prepare(cls.parse_options({"data_dir": str(fashion_mnist_dir), "train_subset": 250,
                                             "test_subset": 90, "batch_size": 50, "eval_batch_size": 40}))
    tasks = []
    for rank in range(2):
        torch.manual_seed(1)
        tasks.append(cls(options, rank=rank, world_size=2, device=torch.device("cpu")))
    batches = [list(t.train_batches(0)) for t in tasks]
    assert [[b.samples for b in w] for w in batches] == [[50, 50, 25]] * 2  # 125 each, the authors' partial batch
    assert tasks[0].samples_per_epoch == 250 and batches[0][0].data[0].shape == (50, 1, 28, 28)
    task = tasks[0]
    task.training_loss(batches[0][0])
    task.model.eval()
    sums = {split: task.eval_sums(split) for split in task.eval_splits}
    assert sums["train"][1] == 50  # train_acc: the running accuracy of the training batches, as on CIFAR
    assert sums["trainset"][2] == 125 and sums["test"][2] == 45  # each worker scores its half of a split
    metrics = {k: v for split, s in sums.items() for k, v in task.eval_metrics(split, s).items()}
    assert set(metrics) == set(cls.metric_columns) == {"train_acc", "trainset_loss", "trainset_acc", "test_loss", "test_acc"}


def test_random_crop_flip_is_a_crop_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.arange(6 * 3 * 5 * 5, dtype=torch.float32).view(6, 3, 5, 5) + 1
    out = random_crop_flip(images, padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    chosen = set()
    for i in range(6):
        matches = [(t, l, f) for t in range(5) for l in range(5) for f in (False, True)
                   if torch.equal(out[i], padded[i, :, t:t + 5, l:l + 5].flip(-1) if f else padded[i, :, t:t + 5, l:l + 5])]
        assert len(matches) == 1, i  # distinct pixel values: exactly one crop and flip fits
        chosen.add(matches[0])
    assert len(chosen) > 1  # random per image


def test_training_accuracy_and_test_metrics(image_tree):
    cls, options = _prepare(image_tree, batch_size=10, eval_batch_size=7)
    torch.manual_seed(0)
    task = cls(options, rank=0, world_size=1, device=torch.device("cpu"))
    batch = next(iter(task.train_batches(0)))
    loss, data_loss = task.training_loss(batch)
    assert loss is data_loss and loss.ndim == 0
    sums = task.eval_sums("train")
    assert sums[1] == 10 and 0 <= sums[0] <= 10
    assert task.eval_sums("train")[1] == 0  # counted once
    task.model.eval()
    metrics = task.eval_metrics("test", task.eval_sums("test"))
    assert set(metrics) == {"test_loss", "test_acc"} and 0 <= metrics["test_acc"] <= 1


def test_channels_last_changes_the_layout_not_the_loss(image_tree):
    """--channels-last: NHWC weights and batches; the same loss and gradients as the default layout (to float
    rounding), and the setting is refused for a task without images."""
    cls, options = _prepare(image_tree, batch_size=10, eval_batch_size=7)
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        task = cls(options, rank=0, world_size=1, device=torch.device("cpu"))
        if channels_last:
            task.use_channels_last()
        batch = next(iter(task.train_batches(0)))
        assert batch.data[0].is_contiguous(memory_format=torch.channels_last) == channels_last
        conv = next(m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        # in float64: float32's rounding differs between the layouts' kernels by up to ~1e-2 in the first conv's
        # gradient (oneDNN's channels-last backward on torch 2.15), which would hide a real difference
        task.model.double()
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        images, labels = batch.data
        loss, _ = task.training_loss(Batch((images.double(), labels), samples=batch.samples))
        loss.backward()
        results.append((loss.detach(), conv.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-9, atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-9, atol=1e-12)
    r = run_repro("run", "lstm-ptb", "--channels-last", "--validate-only")
    assert r.returncode == 2 and r.stderr.strip().endswith("--channels-last applies to image tasks; lstm-ptb has no "
                                                           "channels_last form"), r.stderr


def test_score_trainset_scores_every_training_image_without_augmentation(image_tree):
    cls, options = _prepare(image_tree, batch_size=10, score_trainset=True)
    tasks = [cls(options, rank=r, world_size=2, device=torch.device("cpu")) for r in range(2)]
    task = tasks[0]
    assert task.eval_splits == task.final_splits == ("train", "trainset", "test")
    assert "trainset_loss" in task.metric_columns and "trainset_acc" in task.metric_columns
    assert sum(len(t.eval_data["trainset"][1]) for t in tasks) == 60  # the two shards cover the training set
    task.model.eval()
    first, again = task.eval_sums("trainset"), task.eval_sums("trainset")
    assert torch.equal(first, again) and first[2] == 30  # deterministic: no augmentation, eval mode
    assert set(task.eval_metrics("trainset", first)) == {"trainset_loss", "trainset_acc"}
    plain = cls(_prepare(image_tree, batch_size=10)[1], rank=0, world_size=1, device=torch.device("cpu"))
    assert "trainset" not in plain.eval_data and plain.eval_splits == ("train", "test")


@pytest.mark.slow
def test_test_split_on_the_last_row_only(image_tree, tmp_path):
    cls, options = _prepare(image_tree, batch_size=10, test_every_epoch=False)
    task = cls(options, rank=0, world_size=1, device=torch.device("cpu"))
    assert task.eval_splits == ("train",) and task.final_splits == ("train", "test")
    out = tmp_path / "results"
    r = run_repro("run", "resnet20-cifar10", "--no-bn", "--optimizer", "adamw", "--epochs", 2, "--batch-size", 20,
                  "--set", "test_every_epoch=false", "--data-dir", image_tree, "--set", "data_format=jpeg",
                  "--out", out, "--quiet", env={"REPRO_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(_runs(out)[0] / "metrics.csv")
    assert rows["test_acc"].isna().tolist() == [True, False] and rows["train_acc"].notna().all()


@pytest.mark.slow
def test_imagenet_imagefolder_pipeline_shards_and_scores(image_tree):
    (image_tree / "test").rename(image_tree / "val")  # ImageNet's layout: train/ and val/
    cls = TASKS.get("resnet50-imagenet")
    options = cls.prepare(cls.parse_options({"data_dir": str(image_tree), "crop": 16, "batch_size": 4, "eval_batch_size": 3}))
    tasks = []
    for rank in range(2):
        torch.manual_seed(3)
        tasks.append(cls(options, rank=rank, world_size=2, device=torch.device("cpu")))
    batches = [list(t.train_batches(0)) for t in tasks]
    assert [len(b) for b in batches] == [7, 7]  # 60 images: 30 per worker, 7 full batches of 4
    images, labels = batches[0][0].data
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    assert tasks[0].samples_per_epoch == 56
    task = tasks[0]
    loss, _ = task.training_loss(batches[0][0])
    assert torch.isfinite(loss)
    task.model.eval()
    sums = task.eval_sums("test")
    assert sums[2] == 10  # half of the 20 validation images
    with pytest.raises(DataError, match="train/"):
        cls.prepare(cls.parse_options({"data_dir": str(image_tree / "train")}))


def _runs(out, task="resnet20-cifar10"):
    return sorted((out / task).iterdir())


@pytest.mark.slow
@pytest.mark.dist
def test_two_worker_bn_run_has_identical_bn_buffers_after_sync(image_tree, tmp_path):
    """Periodic averaging covers BatchNorm statistics: worker_spread (parameters and float buffers) is 0 after
    the sync; without any sync the two workers' BN statistics and weights differ."""
    env = {"REPRO_CACHE_DIR": str(tmp_path / "cache")}
    common = ["--machines", 2, "--data-dir", image_tree, "--set", "data_format=jpeg", "--batch-size", 5,
              "--max-steps", 3, "--quiet"]
    out = tmp_path / "synced"
    r = run_repro("run", "resnet20-cifar10", "--algo", "celgc", "--interval", 3, "--out", out, *common, env=env)
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(_runs(out)[0] / "metrics.csv")
    last = rows.iloc[-1]
    assert last["worker_spread"] == 0.0 and last["comm_rounds"] == 1  # averaged after step 3, the last
    assert {"train_acc", "test_loss", "test_acc"} <= set(rows.columns) and 0 <= last["test_acc"] <= 1
    out = tmp_path / "unsynced"
    r = run_repro("run", "resnet20-cifar10", "--optimizer", "sgd", "--sync", "none", "--out", out, *common, env=env)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(_runs(out)[0] / "metrics.csv").iloc[-1]["worker_spread"] > 0


@pytest.mark.slow
@pytest.mark.dist
def test_no_bn_run_with_loss_multiplier_and_stats(image_tree, tmp_path):
    out = tmp_path / "results"
    r = run_repro("run", "resnet20-cifar10", "--no-bn", "--optimizer", "adamw", "--lr", 1e-3, "--weight-decay", 5e-5,
                  "--loss-multiplier", 10, "--log-stats", 1, "--scheduler", "cosine", "--max-steps", 2,
                  "--data-dir", image_tree, "--set", "data_format=jpeg", "--batch-size", 8, "--out", out, "--quiet",
                  env={"REPRO_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    run_dir = _runs(out)[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"]["options"]["bn"] is False and config["schedule"]["name"] == "cosine"
    assert config["train"]["loss_multiplier"] == 10.0 and config["train"]["log_stats"] == [1]
    assert config["optimizer"]["name"] == "adamw"
    assert {k: config["optimizer"]["hparams"][k] for k in ("lr", "weight_decay")} == {"lr": 1e-3, "weight_decay": 5e-5}
    stats = np.load(run_dir / "stats.npz")
    n = _n_params(CifarResNet(20, 10, bn=False))
    assert stats["steps"].tolist() == [2]
    assert stats["grad_counts"].sum() + stats["grad_zeros"].sum() == 2 * n
    assert stats["update_counts"].sum() + stats["update_zeros"].sum() == 2 * n
    assert stats["update_counts"].sum() > 0


@pytest.mark.slow
@pytest.mark.dist
def test_sweep_carries_on_after_a_diverged_run(image_tree, tmp_path):
    out = tmp_path / "results"
    r = run_repro("sweep", "resnet20-cifar10", "--no-bn", "--optimizer", "sgd", "--lr", "1e12,0.01", "--epochs", 1,
                  "--data-dir", image_tree, "--set", "data_format=jpeg", "--batch-size", 20, "--out", out, "--quiet",
                  env={"REPRO_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    status = {json.loads((d / "config.json").read_text())["optimizer"]["hparams"]["lr"]:
              pd.read_csv(d / "metrics.csv").iloc[-1]["status"] for d in _runs(out)}
    assert status == {1e12: "diverged", 0.01: "done"}


@pytest.mark.slow
@pytest.mark.dist
def test_a_failing_worker_ends_the_run_with_one_line_naming_its_rank(image_tree, tmp_path):
    # 60 images cannot give 4 workers a batch of 20 each: every worker raises while building its task.
    r = run_repro("run", "resnet20-cifar10", "--optimizer", "sgd", "--machines", 4, "--batch-size", 20, "--epochs", 1,
                  "--data-dir", image_tree, "--set", "data_format=jpeg", "--out", tmp_path / "results", "--quiet",
                  env={"REPRO_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 1
    # Whichever worker fails first is named (the launcher stops the others).
    assert re.fullmatch(r"repro: error: worker rank [0-3] failed \(exit code 1\): repro\.errors\.UsageError: 60 "
                        r"training images cannot give each of 4 workers a batch of 20; details in "
                        r".*/logs/rank[0-3]\.log", r.stderr.strip()), r.stderr  # one line: the traceback is in the log
    assert "Traceback" in next((tmp_path / "results" / "resnet20-cifar10").glob("*/logs/rank*.log")).read_text()


@pytest.mark.slow  # two loader processes and a ResNet-50: ~14 s
def test_imagenet_augmentation_is_the_same_on_resume_whichever_loader_process_reads_an_image(tmp_path):
    """Two loader processes: a resumed epoch (one batch skipped, so every later batch goes to the other process)
    crops and flips each image as the uninterrupted epoch did, whatever the global RNG."""
    from PIL import Image

    from repro.tasks.imagenet import ImageNetOptions

    gen = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 1)):
        for c in range(2):
            folder = tmp_path / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(gen.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    cls = TASKS.get("resnet50-imagenet")
    options = cls.prepare(ImageNetOptions(data_dir=str(tmp_path), batch_size=2, crop=8, loader_workers=2))
    torch.manual_seed(3)
    task = cls(options, rank=0, world_size=1, device=torch.device("cpu"))
    torch.manual_seed(1)
    whole = [b.data[0] for b in task.train_batches(epoch=1)]
    torch.manual_seed(2)
    rest = [b.data[0] for b in task.batches_from(epoch=1, skip=1)]
    assert len(whole) == 6 and len(rest) == 5
    assert all(torch.equal(a, b) for a, b in zip(rest, whole[1:]))
    again = [b.data[0] for b in task.train_batches(epoch=2)]
    assert not all(torch.equal(a, b) for a, b in zip(again, whole))  # a new epoch, new crops
