"""The pure maths of decentralized and Byzantine-robust training: topologies, robust aggregators, attacks, data
splits and MoNNA's momentum (fast tier: no processes)."""
import math
from statistics import NormalDist

import pytest
import torch

from repro import byzantine, optim, partition, robust, topology
from repro.errors import UsageError

TOPOLOGY_CASES = [("ring", n) for n in (1, 2, 3, 4, 7, 8)] + [("torus", n) for n in (4, 6, 9, 12)] + \
                 [("exponential", n) for n in (2, 5, 8, 16)] + \
                 [("one-peer-exponential", n) for n in (2, 6, 8)] + [("complete", n) for n in (1, 3, 5)]


@pytest.mark.parametrize("name,n", TOPOLOGY_CASES)
def test_mixing_matrices_are_symmetric_doubly_stochastic_and_their_rows_are_the_peers(name, n):
    for step in range(4):
        w = topology.matrix(name, n, step=step)
        assert w.shape == (n, n) and w.dtype == torch.float64
        assert torch.equal(w, w.T)
        assert (w >= 0).all()
        assert torch.allclose(w.sum(dim=0), torch.ones(n, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(w.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-12)
        for rank in range(n):
            row = torch.zeros(n, dtype=torch.float64)
            row[rank] = topology.self_weight(name, n, rank, step)
            for peer, weight in topology.peers(name, n, rank, step):
                assert peer != rank and weight > 0
                row[peer] = weight
            assert torch.equal(row, w[rank])


def test_ring_and_torus_weigh_self_and_each_neighbour_equally_as_chocosgd():
    ring = topology.matrix("ring", 6)
    assert topology.peers("ring", 6, 0) == [(1, pytest.approx(1 / 3)), (5, pytest.approx(1 / 3))]
    assert ring[0, 0] == pytest.approx(1 / 3) and ring[0, 3] == 0
    torus = topology.matrix("torus", 9)  # 3 x 3: four distinct neighbours each
    assert sorted(p for p, _ in topology.peers("torus", 9, 4)) == [1, 3, 5, 7]
    assert torch.allclose(torus[torus > 0], torch.full((45,), 0.2, dtype=torch.float64))
    assert topology.torus_shape(12) == (3, 4) and topology.torus_shape(12, rows=2) == (2, 6)
    assert torch.equal(topology.matrix("complete", 4), torch.full((4, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 3, 5, 7, 13])
def test_a_torus_refuses_a_number_of_workers_that_does_not_factor(n):
    with pytest.raises(UsageError, match="factors"):
        topology.matrix("torus", n)
    with pytest.raises(UsageError, match="rows x cols"):
        topology.matrix("torus", 8, rows=3)


def test_one_peer_exponential_pairs_one_peer_and_averages_exactly_after_log2_n_steps():
    n = 8
    x = torch.randn(n, 3, dtype=torch.float64)
    mixed = x.clone()
    for step in range(3):
        assert all(len(topology.peers("one-peer-exponential", n, r, step)) == 1 for r in range(n))
        mixed = topology.matrix("one-peer-exponential", n, step) @ mixed
    assert torch.allclose(mixed, x.mean(dim=0).expand(n, -1), atol=1e-12)
    assert topology.period("one-peer-exponential", n) == 3 and topology.period("ring", n) == 1
    assert topology.spectral_gap(topology.matrix("complete", 5)) == pytest.approx(1.0)
    assert topology.spectral_gap(topology.matrix("ring", 16)) < topology.spectral_gap(topology.matrix("exponential", 16))


def test_unknown_topology_and_option_are_one_line_errors():
    with pytest.raises(UsageError, match="unknown topology 'star'"):
        topology.matrix("star", 4)
    with pytest.raises(UsageError, match="does not take rows"):
        topology.matrix("ring", 4, rows=2)


# Robust aggregation ----------------------------------------------------------------------------------------------
def _vectors(n=7, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_nna_with_no_faults_is_the_mean_and_otherwise_the_mean_of_the_n_minus_f_nearest():
    v = _vectors()
    for own in range(7):
        assert torch.allclose(robust.aggregate("nna", v, 0, own), v.mean(dim=0))
    v[5] += 100.0
    v[6] -= 100.0  # two outliers: every honest worker drops them
    for own in range(5):
        assert torch.allclose(robust.aggregate("nna", v, 2, own), v[:5].mean(dim=0))
    # from an outlier's own view its own vector is nearest (kept), the other outlier is dropped
    from_outlier = robust.aggregate("nna", v, 2, 5)
    d = ((v - v[5]) ** 2).sum(dim=1)
    assert torch.allclose(from_outlier, v[d.argsort()[:5]].mean(dim=0))


def test_coordinate_rules_follow_their_definitions():
    v = torch.tensor([[1.0, -5.0], [2.0, 0.0], [3.0, 1.0], [100.0, 2.0], [-50.0, 3.0]])
    assert robust.aggregate("median", v, 2, 0).tolist() == [2.0, 1.0]
    assert robust.aggregate("median", v[:4], 1, 0).tolist() == [2.5, 0.5]  # even count: mean of the middle two
    assert robust.aggregate("trimmed-mean", v, 1, 0).tolist() == [2.0, 1.0]  # drop 1 smallest and 1 largest
    assert robust.aggregate("trimmed-mean", v, 0, 0).tolist() == v.mean(dim=0).tolist()
    assert robust.aggregate("mean", v, 0, 0).tolist() == v.mean(dim=0).tolist()


def test_krum_geometric_median_and_centered_clip_ignore_far_outliers():
    honest = _vectors(6, 4, seed=1)
    bad = torch.full((2, 4), 1e6, dtype=torch.float64)
    v = torch.cat([honest, bad])
    assert any(torch.equal(robust.aggregate("krum", v, 2, 0), h) for h in honest)
    assert robust.aggregate("multi-krum", v, 2, 0).abs().max() < 10
    assert torch.allclose(robust.aggregate("multi-krum", honest, 0, 0), honest.mean(dim=0))
    # a symmetric cloud: the geometric median is its centre
    cloud = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    assert robust.aggregate("geometric-median", torch.cat([cloud + 3, torch.tensor([[1e6, 1e6]])]), 1, 0) \
        .sub(torch.tensor([3.0, 3.0])).abs().max() < 1e-2  # Weiszfeld nears a data point slowly
    assert robust.aggregate("geometric-median", v, 2, 0).abs().max() < 10
    clipped = robust.aggregate("centered-clip", v, 2, 0, tau=1.0)
    assert (clipped - honest[0]).norm() <= 1.0 + 1e-9  # each of the 8 moves by at most tau / 8
    assert torch.allclose(robust.aggregate("centered-clip", honest, 0, 3, tau=1e9), honest.mean(dim=0))


@pytest.mark.parametrize("name", ["nna", "median", "trimmed-mean", "krum", "multi-krum", "geometric-median",
                                  "centered-clip"])
@pytest.mark.parametrize("poison", [float("nan"), 1e30, float("inf")])
def test_robust_rules_stay_finite_with_a_nan_or_huge_sender(name, poison):
    v = _vectors(7, 4, seed=2).float()
    v[6] = poison
    out = robust.aggregate(name, v, 2, 0)
    assert torch.isfinite(out).all() and out.abs().max() < 10, (name, out)
    assert not torch.isfinite(robust.aggregate("mean", v, 0, 0)).all() or poison == 1e30


def test_aggregators_refuse_f_they_cannot_tolerate():
    v = _vectors(6)
    for name in ("nna", "trimmed-mean", "median", "geometric-median"):
        with pytest.raises(UsageError, match="tolerates at most f = 2 of 6"):
            robust.aggregate(name, v, 3, 0)
    with pytest.raises(UsageError, match="krum tolerates at most f = 1 of 6"):
        robust.validate("krum", 6, 2)
    with pytest.raises(UsageError, match="unknown aggregator"):
        robust.aggregate("bulyan", v, 1, 0)
    with pytest.raises(UsageError, match="own_index"):
        robust.aggregate("nna", v, 1, 6)


def test_on_a_quadratic_one_sign_flipper_of_four_defeats_averaging_but_not_nna():
    """Three honest workers minimise 1/2 |x - c_i|^2 (optimum: the mean of the c_i); the fourth sends minus the
    honest models' mean. Each honest worker steps on its own model, then mixes the four models."""
    targets = torch.tensor([[4.0, 6.0], [5.0, 5.0], [6.0, 4.0]], dtype=torch.float64)
    optimum = targets.mean(dim=0)

    def train(rule):
        models = torch.zeros(3, 2, dtype=torch.float64)
        for _ in range(300):
            models = models - 0.1 * (models - targets)
            sent = torch.cat([models, byzantine.attack("sign-flip", models, 1)])
            models = torch.stack([robust.aggregate(rule, sent, 1 if rule == "nna" else 0, i) for i in range(3)])
        return (models - optimum).norm(dim=1).max().item()

    assert train("mean") > 1.0
    assert train("nna") < 1e-3


# Attacks ---------------------------------------------------------------------------------------------------------
def test_attacks_forge_their_definitions_and_are_bitwise_reproducible():
    h = _vectors(5, 6, seed=3).float()
    mean, std = h.mean(dim=0), h.std(dim=0)
    assert torch.equal(byzantine.attack("sign-flip", h, 2), torch.stack([-mean, -mean]))
    assert torch.equal(byzantine.attack("mimic", h, 3, target=1), h[1].expand(3, -1))
    assert torch.allclose(byzantine.attack("foe", h, 1)[0], -0.1 * mean)
    assert torch.allclose(byzantine.attack("alie", h, 2, factor=1.5)[0], mean + 1.5 * std)
    # the closed form: n = 7, s = floor(7/2 + 1) - 2 = 2, z = Phi^-1(5/7)
    z = NormalDist().inv_cdf(5 / 7)
    assert torch.allclose(byzantine.attack("alie", h, 2)[1], mean + z * std)
    one, two = byzantine.attack("noise", h, 2, sigma=0.5, seed=7), byzantine.attack("noise", h, 2, sigma=0.5, seed=7)
    assert torch.equal(one, two) and not torch.equal(one[0], one[1])
    assert not torch.equal(one, byzantine.attack("noise", h, 2, sigma=0.5, seed=8))
    for name, opts in (("alie", {"search": "nna", "declared_f": 2}), ("foe", {"search": "trimmed-mean"})):
        assert torch.equal(byzantine.attack(name, h, 2, **opts), byzantine.attack(name, h.clone(), 2, **opts))
    assert byzantine.attack("sign-flip", h, 0).shape == (0, 6)


def test_the_line_search_moves_the_aggregate_at_least_as_far_as_no_attack():
    h = _vectors(8, 10, seed=4)
    for name in ("alie", "foe"):
        forged = byzantine.attack(name, h, 3, search="trimmed-mean", declared_f=3)
        out = robust.aggregate("trimmed-mean", torch.cat([h, forged]), 3, 0)
        idle = robust.aggregate("trimmed-mean", torch.cat([h, h.mean(dim=0).expand(3, -1)]), 3, 0)
        assert (out - h.mean(dim=0)).norm() >= (idle - h.mean(dim=0)).norm()
    assert byzantine.line_maximize(lambda x: -(x - 3.0) ** 2, evals=40) == pytest.approx(3.0, abs=0.05)


def test_behaviours_without_vectors_are_refused_by_attack_and_validated_by_options():
    h = _vectors(3)
    with pytest.raises(UsageError, match="label-flip acts on the labels"):
        byzantine.attack("label-flip", h, 1)
    with pytest.raises(UsageError, match="crash acts on the exchange"):
        byzantine.attack("crash", h, 1)
    byzantine.validate("crash", at_step=5, mode="freeze")
    with pytest.raises(UsageError, match="mode must be drop or freeze"):
        byzantine.validate("crash", mode="explode")
    with pytest.raises(UsageError, match="does not take"):
        byzantine.validate("sign-flip", sigma=1.0)
    with pytest.raises(UsageError, match="unknown byzantine behaviour"):
        byzantine.attack("empire", h, 1)


# Partitions ------------------------------------------------------------------------------------------------------
LABELS = torch.arange(1000) % 10


def _disjoint(parts):
    flat = [i for p in parts for i in p]
    return len(flat) == len(set(flat))


def test_iid_split_is_equal_disjoint_and_reproducible():
    parts = partition.split("iid", LABELS, 3, seed=1)
    assert [len(p) for p in parts] == [333] * 3 and _disjoint(parts)
    assert parts == partition.split("iid", LABELS, 3, seed=1) != partition.split("iid", LABELS, 3, seed=2)


def test_dirichlet_split_covers_the_data_respects_min_size_and_skews_with_small_alpha():
    rng_state = torch.get_rng_state()
    skewed = partition.split("dirichlet", LABELS, 5, seed=0, alpha=0.1, min_size=20)
    assert torch.equal(torch.get_rng_state(), rng_state)  # its own generator
    assert sorted(i for p in skewed for i in p) == list(range(1000))
    assert min(len(p) for p in skewed) >= 20
    assert skewed == partition.split("dirichlet", LABELS, 5, seed=0, alpha=0.1, min_size=20)
    flat = partition.split("dirichlet", LABELS, 5, seed=0, alpha=100.0)

    def classes_seen(parts):  # classes holding at least 5 % of a worker's samples, averaged over workers
        return sum(int((torch.bincount(LABELS[p], minlength=10) > 0.05 * len(p)).sum()) for p in parts) / len(parts)

    assert classes_seen(skewed) < 5 < classes_seen(flat)
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="alpha must be a finite number > 0"):
            partition.split("dirichlet", LABELS, 5, seed=0, alpha=alpha)
    with pytest.raises(UsageError, match="cannot give 5 workers min_size=300"):
        partition.split("dirichlet", LABELS, 5, seed=0, min_size=300)


def test_classes_split_gives_each_worker_k_classes():
    parts = partition.split("classes", LABELS, 5, seed=0, k=2)
    assert _disjoint(parts)
    assert [sorted(set(LABELS[p].tolist())) for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(UsageError, match="unknown partition"):
        partition.split("shards", LABELS, 5, seed=0)


# MoNNA's momentum ------------------------------------------------------------------------------------------------
def test_monna_momentum_is_an_ema_from_zero_unlike_torch_dampening():
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(2))
    ours = optim.make("monna", [p], lr=1.0, beta=0.9)
    torchs = torch.optim.SGD([q], lr=1.0, momentum=0.9, dampening=0.9)
    for g in (torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])):
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        torchs.step()
    m1 = 0.1 * torch.tensor([1.0, 2.0])
    m2 = 0.9 * m1 + 0.1 * torch.tensor([3.0, -1.0])
    assert torch.allclose(p.detach(), -(m1 + m2))
    assert not torch.allclose(q.detach(), p.detach())  # torch's first step is the undampened gradient
    with pytest.raises(UsageError, match="beta must be in"):
        optim.make("monna", [p], beta=1.0)
    assert math.isclose(optim.OPTIMIZERS.get("monna").__defaults__[1], 0.99)


# The image tasks' side of the byzantine and partition kinds --------------------------------------------------------
def _tiny_image_task(rank=0, world=2):
    from types import SimpleNamespace

    from repro.tasks.images import ImageClassificationTask

    task = ImageClassificationTask(SimpleNamespace(batch_size=4), rank, world, torch.device("cpu"))
    task.train_x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()  # = index
    task.train_y = torch.arange(40) % 10
    task.data_seed = 0
    task.set_normalization((0.0,), (1.0,))
    return task


def test_an_image_task_trains_on_its_partition_share_with_the_common_steps_per_epoch():
    task = _tiny_image_task()
    common = len(list(task.train_batches(0)))  # the iid shards: 40 / 2 workers / batch 4 = 5 batches
    task.use_shard([3, 13, 23])  # a small share: cycled through

    def samples(epoch):
        return [(batch.data[0][:, 0, 0, 0] * 255).round().long().tolist() for batch in task.train_batches(epoch)]

    first = samples(0)
    assert len(first) == common == 5 and all(len(b) == 4 for b in first)
    flat = [i for b in first for i in b]
    assert set(flat) == {3, 13, 23} and all(flat.count(i) >= 6 for i in (3, 13, 23))  # each round uses all three
    assert samples(1) != first and samples(0) == first  # reshuffled every epoch, reproducibly


def test_a_label_flipping_worker_trains_on_classes_minus_one_minus_label():
    task = _tiny_image_task()
    task.flip_labels()
    assert task.train_y[:10].tolist() == list(range(9, -1, -1))
