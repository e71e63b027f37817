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
    assert model.weight.detach().item() == 10.0  # training continues from the current iterate


def test_state_dict_round_trip_keeps_history_count_average_and_the_active_flag():
    from repro.callbacks import IterateAveraging

    cb = IterateAveraging(nonmono=1)
    for loss in (3.0, 2.0, 2.5, 3.5):
        cb.average.observe(loss)
    assert cb.average.active and cb.average.count == 0  # on, nothing averaged yet
    fresh = IterateAveraging(nonmono=1)
    fresh.load_state_dict(cb.state_dict())
    assert fresh.average.active and fresh.average.history == [3.0, 2.0, 2.5, 3.5]

    model = torch.nn.Linear(2, 1)
    for w in (1.0, 3.0):
        model.weight.data.fill_(w)
        cb.average.add(model)
    state = cb.state_dict()
    torch.save(state, "/dev/null")
    fresh = IterateAveraging(nonmono=1)
    fresh.load_state_dict(state)
    assert fresh.average.count == 2 and fresh.average.active
    assert all(torch.equal(a, b) for a, b in zip(fresh.average.average, cb.average.average))
    model.weight.data.fill_(8.0)
    cb.average.add(model), fresh.average.add(model)
    assert torch.equal(fresh.average.average[0], cb.average.average[0])  # the running mean goes on alike

    idle = IterateAveraging(nonmono=2)
    idle.load_state_dict(IterateAveraging(nonmono=2).state_dict())
    assert not idle.average.active and idle.average.count == 0
