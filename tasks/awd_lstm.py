"""AWD-LSTM language model (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM LMs").

Weight drop is done functionally: each LSTM keeps its raw hidden-to-hidden matrix as the parameter
`weight_hh_raw`, and every forward pass runs the LSTM kernel on a freshly dropped copy. The original
code swapped a plain tensor into `weight_hh_l0` by attribute assignment, which breaks with PyTorch 2.x.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

# The dropped weight is never part of cuDNN's flat weight buffer, so cuDNN warns on every call.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole words: a dropped word's embedding is zero at every position it occurs."""
    weight = embed.weight
    if training and p > 0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(words, weight, embed.padding_idx)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout on (T, B, H): one mask per sequence, shared over all time steps."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


def ar_tar_penalty(raw_outputs, dropped_outputs, alpha: float, beta: float) -> torch.Tensor:
    """Activation regularization (AR) + temporal AR (TAR) on the last layer, as in the AWD-LSTM recipe."""
    penalty = dropped_outputs[-1].new_zeros(())
    if alpha:
        penalty = penalty + alpha * dropped_outputs[-1].pow(2).mean()
    if beta:
        h = raw_outputs[-1]
        penalty = penalty + beta * (h[1:] - h[:-1]).pow(2).mean()
    return penalty


class RNNModel(nn.Module):
    def __init__(self, ntoken, ninp=400, nhid=1150, nlayers=3, dropout=0.4, dropouth=0.3,
                 dropouti=0.65, dropoute=0.1, wdrop=0.5, tie_weights=True):
        super().__init__()
        self.ntoken, self.ninp, self.nhid, self.nlayers = ntoken, ninp, nhid, nlayers
        self.dropout, self.dropouth, self.dropouti, self.dropoute, self.wdrop = (
            dropout, dropouth, dropouti, dropoute, wdrop)
        self.tie_weights = tie_weights
        self.encoder = nn.Embedding(ntoken, ninp)
        # The last layer outputs ninp units when tied, so the decoder can reuse the embedding matrix.
        sizes = [ninp] + [nhid] * (nlayers - 1) + [ninp if tie_weights else nhid]
        self.rnns = nn.ModuleList()
        for l in range(nlayers):
            rnn = nn.LSTM(sizes[l], sizes[l + 1], num_layers=1)
            # Move hh weight to a new name so that exactly one trainable copy stays registered.
            rnn.weight_hh_raw = rnn._parameters.pop("weight_hh_l0")
            self.rnns.append(rnn)
        self.decoder = nn.Linear(sizes[-1], ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def _run_lstm(self, rnn: nn.LSTM, x: torch.Tensor, hidden):
        # DropConnect on the recurrent matrix: one mask per forward pass (i.e. per minibatch).
        w_hh = F.dropout(rnn.weight_hh_raw, self.wdrop, self.training)
        weights = [rnn.weight_ih_l0, w_hh, rnn.bias_ih_l0, rnn.bias_hh_l0]
        # Same kernel nn.LSTM calls: (input, hx, weights, has_biases, num_layers, dropout, train,
        # bidirectional, batch_first).
        out, h, c = torch._VF.lstm(x, tuple(hidden), weights, True, 1, 0.0, self.training, False, False)
        return out, (h, c)

    def forward(self, input, hidden, return_h=False):
        emb = embedded_dropout(self.encoder, input, self.dropoute, self.training)
        output = locked_dropout(emb, self.dropouti, self.training)
        new_hidden, raw_outputs, dropped_outputs = [], [], []
        for l, rnn in enumerate(self.rnns):
            raw, h = self._run_lstm(rnn, output, hidden[l])
            new_hidden.append(h)
            raw_outputs.append(raw)
            last = l == self.nlayers - 1
            output = locked_dropout(raw, self.dropout if last else self.dropouth, self.training)
            dropped_outputs.append(output)
        logits = self.decoder(output.reshape(-1, output.size(2)))
        if return_h:
            return logits, new_hidden, raw_outputs, dropped_outputs
        return logits, new_hidden

    def init_hidden(self, batch_size):
        w = self.encoder.weight
        return [(w.new_zeros(1, batch_size, rnn.hidden_size), w.new_zeros(1, batch_size, rnn.hidden_size))
                for rnn in self.rnns]

    @staticmethod
    def repackage_hidden(h):
        """Detach hidden states from their history (truncated BPTT)."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        return type(h)(RNNModel.repackage_hidden(v) for v in h)
