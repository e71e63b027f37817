"""Word-level language modelling with (AWD-)LSTMs on PTB and WikiText-2: CELGC's LM benchmarks.

Data follow the authors' code: the training stream is cut into N contiguous shards and worker r reads
shard (r + epoch) mod N, each batchified into ``batch_size`` columns; truncated BPTT carries the hidden
state across batches. The ``paper`` recipes draw a sequence length around ``bptt`` per step (the same
draw on every worker, so all workers take the same number of steps) and rescale the step size (and the
clipping threshold) by seq_len / bptt.

Evaluation follows the authors' `evaluate` too: validation and test perplexity every epoch, each split scored as
one stream (batchified into ``eval_batch_size`` / ``test_batch_size`` columns, the hidden state carried across the
whole split). Every worker scores the whole split (N times the work of sharding it, in the same wall-clock time as
rank 0 alone while the others wait); the trainer sums the N workers' sums, which leaves the ratio the same when
the evaluated models are (the average in a copy) and averages over the workers' own models with sync `none`.
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


# Settings (recipes) live in repro/recipes/celgc.py.


class LanguageModelTask(Task):
    Options = LMOptions
    corpus_name = "ptb"
    metric_columns = ("val_loss", "val_ppl", "test_loss", "test_ppl")
    eval_splits = final_splits = ("val", "test")  # the authors log test perplexity every epoch
    sample_unit = "tok"
    carried_state = ("hidden",)  # truncated BPTT carries the LSTM state from batch to batch (checkpoints keep it)

    @classmethod
    def prepare(cls, options: LMOptions) -> LMOptions:
        return replace(options, data_dir=str(resolve_data_dir(CORPORA[cls.corpus_name], options.data_dir)))

    def __init__(self, options: LMOptions, rank: int, world_size: int, device: torch.device):
        self.opts, self.rank, self.world, self.device = options, rank, world_size, device
        corpus = load_corpus(self.corpus_name, options.data_dir)
        self.ntokens = len(corpus.dictionary)
        self.shards = shard_stream(corpus.train, world_size)
        self.samples_per_epoch = sum(len(s) for s in self.shards)
        # The whole split on every worker, one stream (not N shards each starting from a zero hidden state).
        self.eval_data = {
            "val": batchify(corpus.valid, options.eval_batch_size).to(device),
            "test": batchify(corpus.test, options.test_batch_size).to(device),
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


@TASKS.register("lstm-wt2")
class WikiText2LanguageModel(LanguageModelTask):
    description = "AWD-LSTM word LM on WikiText-2 (CELGC)"
    corpus_name = "wikitext-2"


@TASKS.register("lstm-text")
class TextLanguageModel(LanguageModelTask):
    description = "LSTM word LM on your own corpus: train.txt, valid.txt, test.txt in --data-dir"
    corpus_name = "text"
