"""Quantized messages as they travel: bit-packed codes plus scales, so a message's ``nbytes`` is its wire size.

``pack(x, name, **opts)`` -> ``Packed`` (``.nbytes`` = ⌈d·bits/8⌉ code bytes + the scales' bytes);
``unpack(message)`` -> the dequantized tensor (``x``'s shape and dtype). Quantizers:

- ``scaled-sign``: Q(x) = (‖x‖₁/d)·sign(x), 1 bit a coordinate (0 counts as +) and one float32 scale.
- ``uniform`` (``bits`` 1-32, ``stochastic``): 2^bits levels evenly spaced on [−s, s], s = max|x| (one float32
  scale); round to nearest, or stochastically (unbiased, ``generator`` for the draws). ``bits=32`` still quantizes.
- ``grid`` (``delta``, ``stochastic``): Q(x) = δ·round(x/δ), the weight grid; the integers are sent at the width
  their range needs, with their offset (int64) and width (one byte); δ is a setting both ends know.
- ``identity``: x as float32 (4 bytes a coordinate): the full-precision baseline through the same path.

``ErrorFeedback`` keeps a sender's residual: it sends Q(g + e) and keeps e ← g + e − Q(g + e), so the sum of what
was sent plus the final residual telescopes to the sum of the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from repro.errors import UsageError

QUANTIZERS = ("scaled-sign", "uniform", "grid", "identity")


@dataclass
class Packed:
    """One message: ``codes`` (uint8, bit-packed), ``scales`` (what dequantizing needs besides the codes and the
    settings), the original shape and dtype, and the quantizer with its settings."""
    name: str
    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    bits: int  # code width
    options: dict = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The wire size: code bytes plus scale bytes (shape, dtype and settings are known to both ends)."""
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * self.scales.element_size()


def wire_bytes(name: str, numel: int, **opts) -> int:
    """A message's size for quantizers whose size does not depend on the values (all but ``grid``)."""
    if name == "scaled-sign":
        return math.ceil(numel / 8) + 4
    if name == "uniform":
        return math.ceil(numel * check_bits(opts.get("bits", 8)) / 8) + 4
    if name == "identity":
        return 4 * numel
    raise UsageError(f"the size of a {name!r} message depends on its values")


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= bits <= 32:
        raise UsageError(f"{what} must be an integer from 1 to 32, got {bits!r}")
    return int(bits)


def pack(x: torch.Tensor, name: str, **opts) -> Packed:
    """Quantize ``x`` with quantizer ``name`` and bit-pack the codes."""
    if name not in QUANTIZERS:
        raise UsageError(f"unknown quantizer {name!r} (known: {', '.join(QUANTIZERS)})")
    allowed = {"scaled-sign": set(), "identity": set(), "uniform": {"bits", "stochastic", "generator"},
               "grid": {"delta", "stochastic", "generator"}}[name]
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise UsageError(f"quantizer {name!r} does not take {', '.join(unknown)} "
                         f"(it takes: {', '.join(sorted(allowed)) or 'nothing'})")
    flat = x.detach().reshape(-1)
    if name == "identity":
        raw = flat.to(torch.float32).contiguous().view(torch.uint8)
        return Packed(name, raw.clone(), _empty(flat), x.shape, x.dtype, 32)
    work = flat.double()
    if name == "scaled-sign":
        scale = (work.abs().sum() / max(work.numel(), 1)).to(torch.float32).reshape(1)
        codes = (work >= 0).to(torch.int64)
        return Packed(name, pack_bits(codes, 1), scale, x.shape, x.dtype, 1)
    stochastic = bool(opts.get("stochastic", False))
    generator = opts.get("generator")
    if name == "uniform":
        bits = check_bits(opts.get("bits", 8))
        top = 2**bits - 1
        scale = work.abs().max().to(torch.float32).reshape(1) if work.numel() else torch.zeros(1, device=work.device)
        s = scale.double().to(work.device)
        position = (work + s) / (2 * s) * top if float(s) > 0 else torch.zeros_like(work)
        codes = _round(position, stochastic, generator).clamp_(0, top).to(torch.int64)
        return Packed(name, pack_bits(codes, bits), scale, x.shape, x.dtype, bits, {"bits": bits})
    delta = opts.get("delta")
    if delta is None or not float(delta) > 0:
        raise UsageError(f"quantizer 'grid' needs delta > 0, got {delta!r}")
    steps = _round(work / float(delta), stochastic, generator).to(torch.int64)
    low = int(steps.min()) if steps.numel() else 0
    width = int(int(steps.max()) - low).bit_length() if steps.numel() else 0
    header = torch.tensor([low], dtype=torch.int64).view(torch.uint8)
    scales = torch.cat([header, torch.tensor([width], dtype=torch.uint8)]).to(flat.device)
    return Packed(name, pack_bits(steps - low, width), scales, x.shape, x.dtype, width, {"delta": float(delta)})


def unpack(message: Packed) -> torch.Tensor:
    """The dequantized tensor of ``message``, in the original shape and dtype."""
    n = message.numel
    if message.name == "identity":
        return message.codes.view(torch.float32).to(message.dtype).reshape(message.shape).clone()
    codes = unpack_bits(message.codes, message.bits, n)
    if message.name == "scaled-sign":
        values = (codes.double() * 2 - 1) * message.scales.double()
    elif message.name == "uniform":
        top = 2 ** message.bits - 1
        s = message.scales.double()
        values = codes.double() * (2 * s / top) - s
    elif message.name == "grid":
        low = int(message.scales[:8].cpu().view(torch.int64))
        values = (codes + low).double() * message.options["delta"]
    else:
        raise UsageError(f"unknown quantizer {message.name!r}")
    return values.to(message.dtype).reshape(message.shape)


class ErrorFeedback:
    """A sender's error feedback: ``send(g)`` packs g + e and keeps the part the message lost as the next e."""

    def __init__(self, name: str, **opts):
        self.name, self.opts = name, opts
        self.residual: torch.Tensor | None = None

    def send(self, g: torch.Tensor) -> tuple[Packed, torch.Tensor]:
        """The message for g + e and its dequantized value (what the receiver will see)."""
        corrected = g if self.residual is None else g + self.residual
        message = pack(corrected, self.name, **self.opts)
        sent = unpack(message)
        self.residual = corrected - sent
        return message, sent

    def state_dict(self) -> dict:
        return {"residual": self.residual}

    def load_state_dict(self, state: dict) -> None:
        self.residual = state["residual"]


# -- bit packing ----------------------------------------------------------------------------------------------
def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integer codes < 2^bits into ⌈len·bits/8⌉ bytes, code after code, little-endian bit order (bit j
    of code i is bit (i·bits + j) of the stream). Eight codes fill exactly ``bits`` bytes, so the codes are taken
    eight at a time and each byte gathers the pieces of the codes that overlap it: about (bits + 8)/8 passes over
    the codes, never a tensor of one element per bit."""
    n = codes.numel()
    if bits == 0 or n == 0:
        return torch.zeros(0, dtype=torch.uint8, device=codes.device)
    if bits == 8:
        return codes.to(torch.uint8)
    if bits == 1:  # the scaled sign's codes: one bit each, eight a byte
        weights = (1 << torch.arange(8, device=codes.device, dtype=torch.int64)).to(torch.uint8)
        return (_in_eights(codes.reshape(-1).to(torch.uint8)) * weights).sum(dim=1, dtype=torch.int64).to(torch.uint8)
    groups = _in_eights(codes.reshape(-1).to(torch.int64))
    out = torch.zeros(groups.shape[0], bits, dtype=torch.int64, device=codes.device)
    for k, m, shift in _overlaps(bits):
        code = groups[:, k]
        out[:, m] |= (code << shift if shift >= 0 else code >> -shift) & 0xFF
    return out.to(torch.uint8).reshape(-1)[: math.ceil(n * bits / 8)]


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The ``n`` codes of ``bits`` bits each that ``pack_bits`` stored, as int64."""
    if bits == 0 or n == 0:
        return torch.zeros(n, dtype=torch.int64, device=packed.device)
    if bits == 8:
        return packed[:n].to(torch.int64)
    if bits == 1:
        shifts = torch.arange(8, device=packed.device, dtype=torch.int64)
        return ((packed.to(torch.int64).reshape(-1, 1) >> shifts) & 1).reshape(-1)[:n]
    stream = packed.reshape(-1).to(torch.int64)
    pad = (-stream.numel()) % bits
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    rows = stream.reshape(-1, bits)  # eight codes a row
    groups = torch.zeros(rows.shape[0], 8, dtype=torch.int64, device=packed.device)
    for k, m, shift in _overlaps(bits):  # byte m holds the code's bits from -shift on (or from 0, shifted in)
        byte = rows[:, m]
        groups[:, k] |= byte >> shift if shift >= 0 else byte << -shift
    return (groups & ((1 << bits) - 1)).reshape(-1)[:n]


def _in_eights(codes: torch.Tensor) -> torch.Tensor:
    pad = (-codes.numel()) % 8
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    return codes.reshape(-1, 8)


def _overlaps(bits: int) -> list[tuple[int, int, int]]:
    """(k, m, shift) for each code k of a group of eight and each of the group's bytes m it has bits in; shift =
    the code's first bit position in the stream minus byte m's, so that code << shift (>> −shift) lines it up."""
    return [(k, m, k * bits - 8 * m) for k in range(8)
            for m in range(k * bits // 8, (k * bits + bits - 1) // 8 + 1)]


def _round(values: torch.Tensor, stochastic: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not stochastic:
        return torch.round(values)
    floor = torch.floor(values)
    draw = torch.rand(values.shape, generator=generator, dtype=values.dtype, device=values.device)
    return floor + (draw < values - floor).to(values.dtype)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.float32, device=like.device)
