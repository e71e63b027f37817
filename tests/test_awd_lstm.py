"""AWD-LSTM: shapes, parameter registration, weight drop, determinism in eval, checkpoint round-trip."""
import torch

from repro.tasks.awd_lstm import RNNModel, ar_tar_penalty


def _model(seed=0):
    torch.manual_seed(seed)
    return RNNModel(50, ninp=8, nhid=16, nlayers=3)


def _input():
    return torch.randint(0, 50, (7, 4), generator=torch.Generator().manual_seed(1))


def test_forward_backward_shapes():
    m = _model()
    out, hidden, raw, dropped = m(_input(), m.init_hidden(4), return_h=True)
    assert out.shape == (7 * 4, 50)
    assert [tuple(h.shape) for h, _ in hidden] == [(1, 4, 16), (1, 4, 16), (1, 4, 8)]
    assert len(raw) == len(dropped) == 3 and raw[-1].shape == (7, 4, 8)
    loss = torch.nn.functional.cross_entropy(out, torch.zeros(28, dtype=torch.long))
    (loss + ar_tar_penalty(raw, dropped, 2.0, 1.0)).backward()
    for rnn in m.rnns:
        assert rnn.weight_hh_raw.grad is not None and rnn.weight_hh_raw.grad.abs().sum() > 0
    detached = RNNModel.repackage_hidden(hidden)
    assert not detached[0][0].requires_grad


def test_parameters_unique_and_raw_registered():
    m = _model()
    params = list(m.parameters())
    assert len({id(p) for p in params}) == len(params)
    names = dict(m.named_parameters())
    assert all(f"rnns.{l}.weight_hh_raw" in names for l in range(3))
    assert not any(n.endswith("weight_hh_l0") for n in names)
    assert m.decoder.weight is m.encoder.weight


def test_eval_deterministic_train_weight_drop():
    m = _model()
    x = _input()
    m.eval()
    with torch.no_grad():
        a, _ = m(x, m.init_hidden(4))
        b, _ = m(x, m.init_hidden(4))
    assert torch.equal(a, b)
    # Only weight drop active: outputs must differ between two training passes.
    m.dropout = m.dropouth = m.dropouti = m.dropoute = 0.0
    m.train()
    with torch.no_grad():
        c, _ = m(x, m.init_hidden(4))
        d, _ = m(x, m.init_hidden(4))
    assert not torch.equal(c, d)


def test_state_dict_round_trip():
    m, fresh = _model(0), _model(1)
    x = _input()
    fresh.load_state_dict(m.state_dict())
    m.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(m(x, m.init_hidden(4))[0], fresh(x, fresh.init_hidden(4))[0])


def test_lm_evaluation_scores_each_split_as_one_stream_on_every_worker(tiny_corpus):
    """The authors' evaluate: the whole split batchified (eval batch size columns), the hidden state carried over
    it; every worker scores all of it (the trainer's sum over workers leaves the ratio unchanged)."""
    from repro.task import TASKS
    from repro.tasks.corpus import batchify, load_corpus

    cls = TASKS.get("lstm-text")
    options = cls.parse_options({"data_dir": str(tiny_corpus), "emsize": 8, "nhid": 8, "bptt": 5,
                                 "eval_batch_size": 3, "test_batch_size": 2})
    corpus = load_corpus("text", str(tiny_corpus))
    tasks = []
    for rank in range(2):
        torch.manual_seed(0)
        tasks.append(cls(options, rank=rank, world_size=2, device=torch.device("cpu")))
    assert cls.eval_splits == ("val", "test")  # test perplexity every epoch
    for task in tasks:
        assert torch.equal(task.eval_data["val"], batchify(corpus.valid, 3))
        assert torch.equal(task.eval_data["test"], batchify(corpus.test, 2))
        task.model.eval()
    with torch.no_grad():
        sums = [task.eval_sums("val") for task in tasks]
    assert torch.equal(sums[0], sums[1])
    assert sums[0][1] == (batchify(corpus.valid, 3).size(0) - 1) * 3  # every target of the stream scored once
