import torch

from repro.iterate_average import TriggeredIterateAverage


def test_triggers_only_after_nonmonotone_stall_and_averages_models():
    avg = TriggeredIterateAverage(nonmono=2)
    for loss in (5.0, 4.0, 3.0, 2.5):  # still improving
        avg.observe(loss)
    assert not avg.active
    avg.observe(3.5)  # better than 4.0, the best from more than 2 evaluations ago: keep going
    assert not avg.active
    avg.observe(4.5)  # worse than the best from more than 2 evaluations ago (3.0)
    assert avg.active
    model = torch.nn.Linear(1, 1, bias=False)
    for w in (1.0, 2.0, 6.0):
        model.weight.data.fill_(w)
        avg.add(model)
    model.weight.data.fill_(10.0)
    with avg.swapped_in(model):
        assert model.weight.detach().item() == 3.0  # mean of 1, 2, 6
    assert float(model.weight) == 10.0  # training continues from the current iterate
