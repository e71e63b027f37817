"""Word-level language modelling with (AWD-)LSTMs on PTB and WikiText-2: CELGC's LM benchmarks.

Data follow the authors' code: the training stream is cut into N contiguous shards and worker r reads
shard (r + epoch) mod N, each batchified into ``batch_size`` columns; truncated BPTT carries the hidden
state across batches. The ``paper`` presets draw a sequence length around ``bptt`` per step (the same
draw on every worker, so all workers take the same number of steps) and rescale the step size (and the
clipping threshold) by seq_len / bptt.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F

from repro.task import TASKS, Batch, Task
from repro.tasks.awd_lstm import RNNModel, ar_tar_penalty
from repro.tasks.corpus import CORPORA, batchify, load_corpus, resolve_data_dir, shard_stream


@dataclass
class LMOptions:
    data_dir: str | None = None
    batch_size: int = 20  # per worker
    bptt: int = 35
    variable_bptt: bool = False  # AWD-LSTM: seq_len ~ N(bptt, 5), bptt/2 with probability 0.05
    eval_batch_size: int = 10
    test_batch_size: int = 1
    emsize: int = 200
    nhid: int = 200
    nlayers: int = 2
    dropout: float = 0.2  # output
    dropouth: float = 0.2  # between LSTM layers
    dropouti: float = 0.2  # input embedding
    dropoute: float = 0.0  # whole-word embedding dropout
    wdrop: float = 0.0  # DropConnect on hidden-to-hidden weights
    tied: bool = True
    alpha: float = 0.0  # activation regularization
    beta: float = 0.0  # temporal activation regularization


# The authors' scripts (nlp/scripts/*_GPUrun_0.sh + main_lstm.py defaults); see README "Presets".
_AWD = dict(bptt=70, variable_bptt=True, emsize=400, nhid=1150, nlayers=3, dropout=0.4, dropouti=0.4,
            dropoute=0.1, wdrop=0.5, tied=True, alpha=2.0, beta=1.0, eval_batch_size=10, test_batch_size=2)
_PAPER_OPT = dict(name="clipped-sgd", lr=30.0, clip=7.5, momentum=0.0, weight_decay=1.2e-6)


def _paper_preset(batch_size: int, dropouth: float, epochs: int, seed: int) -> dict:
    """What the PTB and WikiText-2 scripts differ in; everything else is shared (N=8, I=16, NT-ASGD eval)."""
    return dict(task=dict(_AWD, batch_size=batch_size, dropouth=dropouth), optimizer=_PAPER_OPT,
                sync=dict(name="periodic", interval=16),
                train=dict(epochs=epochs, machines=8, seed=seed, average_after_nonmono=5))

# Laptop scale: 2x200 LSTM, the step of pytorch/examples' word_language_model (lr 20, clip 0.25 on
# lr-scaled gradients, i.e. gamma = 20 * 0.25 = 5).
_QUICK = dict(task=dict(batch_size=20, bptt=35), optimizer=dict(name="clipped-sgd", lr=20.0, clip=5.0),
              sync=dict(name="periodic", interval=4), train=dict(epochs=6, machines=4, seed=0))


class LanguageModelTask(Task):
    Options = LMOptions
    corpus_name = "ptb"
    metric_columns = ("val_loss", "val_ppl", "test_loss", "test_ppl")
    sample_unit = "tok"

    @classmethod
    def prepare(cls, options: LMOptions) -> LMOptions:
        return replace(options, data_dir=str(resolve_data_dir(CORPORA[cls.corpus_name], options.data_dir)))

    def __init__(self, options: LMOptions, rank: int, world_size: int, device: torch.device):
        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        corpus = load_corpus(self.corpus_name, options.data_dir)
        self.ntokens = len(corpus.dictionary)
        self.shards = shard_stream(corpus.train, world_size)
        self.samples_per_epoch = sum(len(s) for s in self.shards)
        # Each worker scores a contiguous 1/N of the evaluation stream.
        self.eval_data = {
            "val": batchify(shard_stream(corpus.valid, world_size)[rank], options.eval_batch_size).to(device),
            "test": batchify(shard_stream(corpus.test, world_size)[rank], options.test_batch_size).to(device),
        }
        o = options
        self.model = RNNModel(self.ntokens, o.emsize, o.nhid, o.nlayers, o.dropout, o.dropouth, o.dropouti,
                              o.dropoute, o.wdrop, o.tied).to(device)
        self.hidden = None
        self.bptt_rng = random.Random(0)  # reseeded per epoch, identical on every worker

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        data = batchify(self.shards[(self.rank + epoch) % self.world], self.opts.batch_size).to(self.device)
        self.hidden = self.model.init_hidden(self.opts.batch_size)
        self.bptt_rng.seed(epoch)
        i = 0
        while i < data.size(0) - 2:
            seq_len = self._seq_len()
            seq_len = min(seq_len, data.size(0) - 1 - i)
            yield Batch((data[i:i + seq_len], data[i + 1:i + 1 + seq_len].reshape(-1)),
                        samples=seq_len * self.opts.batch_size, lr_scale=seq_len / self.opts.bptt)
            i += seq_len

    def _seq_len(self) -> int:
        if not self.opts.variable_bptt:
            return self.opts.bptt
        bptt = self.opts.bptt if self.bptt_rng.random() < 0.95 else self.opts.bptt / 2
        return max(5, int(self.bptt_rng.gauss(bptt, 5)))

    def training_loss(self, batch: Batch):
        inputs, targets = batch.data
        self.hidden = RNNModel.repackage_hidden(self.hidden)
        logits, self.hidden, raw, dropped = self.model(inputs, self.hidden, return_h=True)
        data_loss = F.cross_entropy(logits, targets)
        objective = data_loss
        if self.opts.alpha or self.opts.beta:
            objective = data_loss + ar_tar_penalty(raw, dropped, self.opts.alpha, self.opts.beta)
        return objective, data_loss

    def eval_sums(self, split: str) -> torch.Tensor:
        data = self.eval_data[split]
        hidden = self.model.init_hidden(data.size(1))
        total, count = 0.0, 0
        starts = range(0, data.size(0) - 1, self.opts.bptt)
        for i in starts[:self.eval_batch_limit]:
            seq_len = min(self.opts.bptt, data.size(0) - 1 - i)
            logits, hidden = self.model(data[i:i + seq_len], hidden)
            targets = data[i + 1:i + 1 + seq_len].reshape(-1)
            total += float(F.cross_entropy(logits, targets, reduction="sum"))
            count += targets.numel()
        return torch.tensor([total, count], dtype=torch.float64)

    def eval_metrics(self, split: str, sums: torch.Tensor) -> dict[str, float]:
        loss = float(sums[0] / sums[1])
        return {f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 700))}

    def describe(self, train_loss: float) -> str:
        return f"loss {train_loss:.3f} ppl {math.exp(min(train_loss, 700)):.1f}"


@TASKS.register("lstm-ptb")
class PTBLanguageModel(LanguageModelTask):
    description = "AWD-LSTM word LM on Penn Treebank (CELGC)"
    corpus_name = "ptb"
    presets = {
        "quick": _QUICK,
        "paper": _paper_preset(batch_size=3, dropouth=0.25, epochs=250, seed=2020),
    }


@TASKS.register("lstm-wt2")
class WikiText2LanguageModel(LanguageModelTask):
    description = "AWD-LSTM word LM on WikiText-2 (CELGC)"
    corpus_name = "wikitext-2"
    presets = {
        "quick": _QUICK,
        "paper": _paper_preset(batch_size=10, dropouth=0.2, epochs=300, seed=1882),
    }


@TASKS.register("lstm-text")
class TextLanguageModel(LanguageModelTask):
    description = "LSTM word LM on your own corpus: train.txt, valid.txt, test.txt in --data-dir"
    corpus_name = "text"
    presets = {"quick": _QUICK}
