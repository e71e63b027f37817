"""The training loop a researcher writes by hand, for the model, data, batch size and optimizer of a `repro` preset.

    python benchmarks/bare_loop.py lstm-ptb --steps 200 --data-dir ../shared/data/ptb
    python benchmarks/bare_loop.py resnet20-cifar10 --steps 200 --data-dir ../shared/data --set data_format=jpeg
    python benchmarks/bare_loop.py convnet-fashion-mnist --steps 200

The peer that `repro run TASK --preset quick --machines 1 --sync none` is measured against (benchmarks/suite.py,
section "overhead"). The settings come from the same recipe (`repro.runspec.resolve`: lr, clip, batch size, subset,
...), the model classes and the data loading from the task modules (`repro.tasks.*`: RNNModel and the tokenized
corpus, CifarResNet and the decoded CIFAR tensors, MNISTConvNet and the IDX files), the optimizer from
`repro.optim.make` (the preset's: clipped SGD, AdamW, SGDOL), seeded in the run's order so that both draw the same
batches, augmentations and dropout masks and follow one trajectory (tests/test_benchmark_suite.py). Everything else
is the plain loop below (`train`):
draw a batch, forward, loss, backward, `optimizer.step(closure)`; no repro trainer, sync policy, callbacks, progress,
logging or checkpoints. A closure, as torch's own two-gradient optimizers need: SGDOL calls it twice per step, each
call on a fresh batch (the quick recipe's pairing), so samples per step = 2 x batch there.

Copies (the speed-up section's ceiling): --copies N --barrier DIR runs this as one of N independent copies started
together, each after its warm-up step waiting in DIR until all N are warm, so that the timed steps of all overlap.

Timing: one warm-up step, then --steps steps. Prints training samples/s over the --steps steps after the warm-up
(steady state) and over all --steps + 1 steps from the first (which is what `repro run --max-steps STEPS+1` reports
as `wall_seconds`: its training clock starts before the first, cold step). Threads: the node's cores
(REPRO_THREADS if set), as a one-worker `repro run` sets them. Tokens are the samples of the language models.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from repro import optim, runspec
from repro.task import TASKS
from repro.worker import seed_everything


def settings(task: str, preset: str, data_dir: str | None, task_options: dict):
    """The resolved settings of `repro run TASK --preset PRESET --machines 1 --sync none` (and the task's
    `prepare`: data found, checked, decoded once), so both sides train the very same configuration."""
    options = dict(task_options)
    if data_dir:
        options["data_dir"] = data_dir
    request = runspec.RunRequest(task=task, preset=preset, sync="none", task_options=options, train={"machines": 1})
    return runspec.prepare_data(runspec.resolve(request))


# -- model and data, from the task modules: one builder per kind of task -----------------------------------------------
def language_model(task_cls, o, device, seed: int):
    """(model, next_batch, loss_of): the quick LM's RNNModel on the batchified training stream, truncated BPTT;
    dropout masks drawn as a one-worker `repro run` draws them (the RNG seeded again after the model is built)."""
    from repro.tasks.awd_lstm import RNNModel
    from repro.tasks.corpus import batchify, load_corpus

    if o.variable_bptt or o.alpha or o.beta:
        raise SystemExit("bare_loop: variable BPTT and AR/TAR are not written here (the quick recipe uses neither)")
    corpus = load_corpus(task_cls.corpus_name, o.data_dir)
    model = RNNModel(len(corpus.dictionary), o.emsize, o.nhid, o.nlayers, o.dropout, o.dropouth, o.dropouti,
                     o.dropoute, o.wdrop, o.tied).to(device)
    data = batchify(corpus.train, o.batch_size).to(device)  # (T, batch): column b is the b-th stretch of text
    seed_everything(seed)
    state = {"i": 0, "hidden": model.init_hidden(o.batch_size)}

    def next_batch():
        i = state["i"]
        if i + 1 + o.bptt > data.size(0):  # the stream's end: start over with a fresh hidden state
            i, state["hidden"] = 0, model.init_hidden(o.batch_size)
        state["i"] = i + o.bptt
        return data[i:i + o.bptt], data[i + 1:i + 1 + o.bptt].reshape(-1)

    def loss_of(batch):
        inputs, targets = batch
        hidden = RNNModel.repackage_hidden(state["hidden"])
        logits, state["hidden"] = model(inputs, hidden)
        return F.cross_entropy(logits, targets)

    return model, next_batch, loss_of


def image_classifier(task_cls, o, device, seed: int):
    """(model, next_batch, loss_of) for CIFAR (ResNet, decoded uint8 tensors, crop + flip) and the IDX sets (the
    SGDOL authors' CNN on Fashion-MNIST / MNIST): full batches of a per-epoch permutation, per-channel normalization
    on the device. The same batches, crops and flips as a one-worker `repro run` draws (its seeding order: the
    data-order seed and the weights from ``seed``, then the RNG seeded again before training): the same trajectory,
    hence the same arithmetic (CPU speed depends on it through denormal numbers), so only the loops differ."""
    from repro.tasks.images import ImageTensors, random_crop_flip, shard_batches, shared_seed, subset_indices

    if hasattr(task_cls, "build_model"):  # CIFAR: the data-order seed is drawn before the model
        data_seed = shared_seed()
        train = ImageTensors.load(Path(o.data_dir) / "train.pt")
        images, labels, kind = train.images, train.labels, "balanced"
        model = task_cls.build_model(task_cls.data.num_classes, o.bn)
        mean, std = task_cls.data.mean, task_cls.data.std
        augment = random_crop_flip if o.augment else (lambda x: x)
    else:  # MNIST, Fashion-MNIST: after it
        from repro.tasks.mnist import DATASETS, TRAIN_IMAGES, TRAIN_LABELS, MNISTConvNet, load_split

        spec = DATASETS[task_cls.dataset]
        images, labels = load_split(spec, Path(o.data_dir), TRAIN_IMAGES, TRAIN_LABELS)
        images, kind = images.unsqueeze(1), "random"
        model = MNISTConvNet()
        data_seed = shared_seed()
        mean, std = (spec.mean,), (spec.std,)
        augment = lambda x: x  # noqa: E731
    if o.train_subset > 0:
        keep = subset_indices(labels, o.train_subset, kind)
        images, labels = images[keep], labels[keep]
    x, y, model = images.to(device), labels.to(device), model.to(device)
    mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device).view(1, -1, 1, 1)
    seed_everything(seed)

    def epochs():  # one worker's share of each epoch's permutation: all of it
        epoch = 0
        while True:
            yield from shard_batches(len(y), o.batch_size, 0, 1, data_seed + epoch)
            epoch += 1

    indices = epochs()

    def next_batch():
        idx = next(indices).to(device)
        return (augment(x[idx]).float() / 255.0 - mean) / std, y[idx]

    def loss_of(batch):
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets)

    return model, next_batch, loss_of


# -- the loop ----------------------------------------------------------------------------------------------------------
def wait_for_copies(barrier: Path, copies: int, timeout_s: float = 600.0) -> None:
    """Mark this copy warm in ``barrier`` and wait until ``copies`` copies are."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"warm-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.glob("warm-*"))) < copies:
        if time.monotonic() > deadline:
            raise SystemExit(f"bare_loop: {copies} copies not all warm after {timeout_s:.0f} s")
        time.sleep(0.01)


def train(model, next_batch, loss_of, optimizer, steps: int, samples_of, device, after_warmup=None) -> dict:
    """1 warm-up step + ``steps`` timed steps of the plain loop; seconds and samples of both spans
    (``after_warmup()`` runs between them, outside both)."""
    counted = {"samples": 0}

    def closure():  # one gradient evaluation on a fresh batch
        batch = next_batch()
        counted["samples"] += samples_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    sync()
    t0 = time.perf_counter()
    optimizer.step(closure)  # warm-up: first-call allocations, optimizer state
    sync()
    t1, warm_samples = time.perf_counter(), counted["samples"]
    if after_warmup is not None:
        after_warmup()
        t0, t1 = t0 + time.perf_counter() - t1, time.perf_counter()  # the wait counts in neither span
    for _ in range(steps):
        optimizer.step(closure)
    sync()
    t2 = time.perf_counter()
    timed = counted["samples"] - warm_samples
    return {"steps": steps, "started_at": time.time() - (t2 - t1), "seconds": t2 - t1, "samples": timed,
            "samples_per_s": timed / (t2 - t1),
            "steps_with_warmup": steps + 1, "seconds_with_warmup": t2 - t0, "samples_with_warmup": counted["samples"],
            "samples_per_s_with_warmup": counted["samples"] / (t2 - t0)}


def footprint(task: str, data_dir: str | None = None, task_options: dict | None = None,
              preset: str = "quick") -> dict:
    """What one more worker must hold for training beyond what processes share, in MB: parameters, gradients and
    optimizer state after one step, plus the activations (the tensors autograd saved for backward in that step,
    each storage counted once). The (model + optimizer state + activations) of issue 12's memory goal; on CPU the
    allocator cannot say it, so it is counted."""
    config, task_cls, model, next_batch, loss_of, optimizer = build_all(task, preset, data_dir, task_options,
                                                                        torch.device("cpu"))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    def closure():
        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_of(next_batch())
        loss.backward()
        return loss

    model.train()
    optimizer.step(closure)
    mb = 1 / 2 ** 20
    params = list(model.parameters())
    param_ids = {p.untyped_storage().data_ptr() for p in params}
    activations = sum(n for ptr, n in saved.items() if ptr not in param_ids)  # weights saved for backward are params
    state = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
                if isinstance(v, torch.Tensor))
    numbers = {"params_mb": sum(p.numel() * p.element_size() for p in params) * mb,
               "grads_mb": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None) * mb,
               "optimizer_state_mb": state * mb, "activations_mb": activations * mb}
    return {"task": task, "optimizer": config.optimizer.name, **numbers, "total_mb": sum(numbers.values())}


def build_all(task: str, preset: str, data_dir: str | None, task_options: dict | None, device: torch.device):
    """(config, task class, model, next_batch, loss_of, optimizer) of the recipe, seeded as the run is."""
    config = settings(task, preset, data_dir, task_options or {})
    task_cls = TASKS.get(config.task.name)
    o = task_cls.parse_options(config.task.options)
    seed_everything(config.train.seed)
    build = language_model if hasattr(task_cls, "corpus_name") else image_classifier
    model, next_batch, loss_of = build(task_cls, o, device, config.train.seed)
    optimizer = optim.make(config.optimizer.name, optim.param_groups(model, config.optimizer.param_groups),
                           **config.optimizer.hparams)
    return config, task_cls, model, next_batch, loss_of, optimizer


def run(task: str, steps: int, data_dir: str | None = None, task_options: dict | None = None,
        preset: str = "quick", after_warmup=None) -> dict:
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu":  # as a one-worker `repro run`: all of the node's cores (REPRO_THREADS if set)
        torch.set_num_threads(int(os.environ.get("REPRO_THREADS") or os.cpu_count() or 1))
    config, task_cls, model, next_batch, loss_of, optimizer = build_all(task, preset, data_dir, task_options, device)
    if hasattr(task_cls, "corpus_name"):
        samples_of = lambda batch: batch[1].numel()  # noqa: E731 - tokens
    else:
        samples_of = lambda batch: len(batch[1])  # noqa: E731 - images
    result = train(model, next_batch, loss_of, optimizer, steps, samples_of, device, after_warmup)
    return {"task": task, "preset": preset, "optimizer": config.optimizer.name, "device": str(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, **result}


def _key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as JSON where it is (numbers, true/false), else as text."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except ValueError:
        return key.replace("-", "_"), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="lstm-ptb, resnet20-cifar10, convnet-fashion-mnist, ... (`repro list`)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=200, help="timed steps after the one warm-up step")
    parser.add_argument("--data-dir", help="as `repro run --data-dir`")
    parser.add_argument("--set", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="a task option, as `repro run --set` (e.g. data_format=jpeg)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line (last line)")
    parser.add_argument("--copies", type=int, default=1, help="with --barrier: how many copies start together")
    parser.add_argument("--barrier", type=Path, help="a folder the --copies copies meet in after their warm-up step")
    parser.add_argument("--footprint", action="store_true",
                        help="instead of timing: one step's parameters, gradients, optimizer state and activations "
                             "in MB, as one JSON line")
    args = parser.parse_args()
    if args.footprint:
        print(json.dumps(footprint(args.task, args.data_dir, dict(args.set), args.preset)), flush=True)
        return
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.copies < 1 or (args.copies > 1 and args.barrier is None):
        parser.error("--copies needs a count >= 1 and, above 1, --barrier")
    meet = (lambda: wait_for_copies(args.barrier, args.copies)) if args.barrier else None
    r = run(args.task, args.steps, args.data_dir, dict(args.set), args.preset, after_warmup=meet)
    print(f"bare loop, {r['task']} ({r['preset']}, {r['optimizer']}, {r['device']}, {r['threads']} threads): "
          f"{r['steps']} steps after 1 warm-up step in {r['seconds']:.2f} s = {r['samples_per_s']:.1f} samples/s; "
          f"all {r['steps_with_warmup']} steps from the first: {r['seconds_with_warmup']:.2f} s = "
          f"{r['samples_per_s_with_warmup']:.1f} samples/s", flush=True)
    if args.json:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
