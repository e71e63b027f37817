"""Quantized messages: exact wire sizes, what each quantizer sends back, and error feedback's telescoping sum."""
import math

import pytest
import torch

from repro.errors import UsageError
from repro.sync import quantize
from repro.sync.quantize import ErrorFeedback, pack, unpack


@pytest.mark.parametrize("bits", list(range(1, 33)))
def test_bit_packing_round_trips_every_width(bits):
    gen = torch.Generator().manual_seed(bits)
    for n in (1, 7, 8, 9, 61):
        codes = torch.randint(0, 2**bits, (n,), generator=gen, dtype=torch.int64)
        packed = quantize.pack_bits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
        assert torch.equal(quantize.unpack_bits(packed, bits, n), codes)


def test_bit_packing_lays_codes_end_to_end_little_endian():
    """Bit j of code i is bit i*bits + j of the stream (the wire format; a faster packer must not change it)."""
    gen = torch.Generator().manual_seed(0)
    for bits in (1, 2, 3, 5, 7, 8, 11, 13, 16, 24, 31, 32):
        for n in (1, 3, 8, 9, 20):
            codes = torch.randint(0, 2**bits, (n,), generator=gen, dtype=torch.int64)
            stream = [0] * math.ceil(n * bits / 8)
            for i, code in enumerate(codes.tolist()):
                for j in range(bits):
                    if code >> j & 1:
                        stream[(i * bits + j) // 8] |= 1 << ((i * bits + j) % 8)
            assert quantize.pack_bits(codes, bits).tolist() == stream, (bits, n)


@pytest.mark.parametrize("n", [1, 5, 8, 13, 1000])
def test_packed_size_is_exact(n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    assert pack(x, "scaled-sign").nbytes == math.ceil(n / 8) + 4
    for bits in (1, 2, 3, 5, 8, 12, 16, 31, 32):
        message = pack(x, "uniform", bits=bits)
        assert message.nbytes == math.ceil(n * bits / 8) + 4 == quantize.wire_bytes("uniform", n, bits=bits)
    assert pack(x, "identity").nbytes == 4 * n
    grid = pack(x, "grid", delta=0.01)
    steps = torch.round(x.double() / 0.01)
    width = int(steps.max() - steps.min()).bit_length()
    assert grid.nbytes == math.ceil(n * width / 8) + 8 + 1


def test_scaled_sign_sends_the_mean_magnitude_with_each_sign():
    x = torch.tensor([[0.5, -1.5], [0.0, -2.0]])
    y = unpack(pack(x, "scaled-sign"))
    assert y.shape == x.shape and torch.equal(y, torch.tensor([[1.0, -1.0], [1.0, -1.0]]))


def test_uniform_rounds_to_the_nearest_level():
    x = torch.randn(500, generator=torch.Generator().manual_seed(0))
    s = x.abs().max()
    for bits in (1, 2, 4, 8):
        y = unpack(pack(x, "uniform", bits=bits))
        step = 2 * s / (2**bits - 1)
        assert (y - x).abs().max() <= step / 2 + 1e-6
        levels = torch.round((y + s) / step)
        assert torch.allclose(levels * step - s, y, atol=1e-5)
    assert torch.allclose(unpack(pack(x, "uniform", bits=32)), x, atol=1e-6)


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = torch.linspace(-1, 1, 9)
    gen = torch.Generator().manual_seed(0)
    draws = unpack(pack(x.repeat(4000, 1), "uniform", bits=2, stochastic=True, generator=gen))  # same scale: max|x|
    mean = draws.mean(0)
    assert torch.allclose(mean, x, atol=0.03)
    one = unpack(pack(x, "uniform", bits=2, stochastic=True, generator=torch.Generator().manual_seed(5)))
    two = unpack(pack(x, "uniform", bits=2, stochastic=True, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(one, two)


def test_grid_puts_weights_on_multiples_of_delta():
    x = torch.randn(300, generator=torch.Generator().manual_seed(1)) + 5
    y = unpack(pack(x, "grid", delta=0.25))
    assert (y - x).abs().max() <= 0.125 + 1e-6
    assert torch.allclose(y / 0.25, torch.round(y / 0.25), atol=1e-5)
    assert torch.equal(unpack(pack(torch.full((4,), 0.75), "grid", delta=0.25)), torch.full((4,), 0.75))


def test_identity_is_bit_exact():
    x = torch.randn(10, 3)
    assert torch.equal(unpack(pack(x, "identity")), x)


def test_error_feedback_telescopes():
    """Σ_t sent_t + e_T = Σ_t g_t: nothing the quantizer drops is lost, only delayed (float64, so exact to ~1e-12)."""
    gen = torch.Generator().manual_seed(3)
    for name, opts in [("scaled-sign", {}), ("uniform", {"bits": 2}), ("uniform", {"bits": 3, "stochastic": True,
                                                                                   "generator": gen})]:
        feedback = ErrorFeedback(name, **opts)
        total_in = torch.zeros(200, dtype=torch.float64)
        total_sent = torch.zeros(200, dtype=torch.float64)
        for _ in range(50):
            g = torch.randn(200, generator=gen, dtype=torch.float64)
            message, sent = feedback.send(g)
            assert sent.dtype == torch.float64 and torch.equal(sent, unpack(message))
            total_in += g
            total_sent += sent
        assert torch.allclose(total_sent + feedback.residual, total_in, rtol=0, atol=1e-10)
        assert not torch.allclose(total_sent, total_in, atol=1e-3)  # the quantizer did drop something


@pytest.mark.parametrize("name,opts,message", [("uniform", {"bits": 0}, "bits"), ("uniform", {"bits": 33}, "bits"),
                                               ("grid", {}, "delta"), ("grid", {"delta": -1}, "delta"),
                                               ("scaled-sign", {"bits": 2}, "does not take"), ("topk", {}, "unknown")])
def test_bad_quantizer_settings_are_usage_errors(name, opts, message):
    with pytest.raises(UsageError, match=message):
        pack(torch.ones(3), name, **opts)
