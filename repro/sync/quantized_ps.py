"""``quantized-ps``: a parameter server running the run's optimizer on quantized gradients, sending quantized
weights back (Chen, Shen, Huang, Liu, "Quantized Adam with Error Feedback", ACM TIST 12(5), 2021; docs/qadam.md).

Every step: each worker packs its gradient (plus its error-feedback residual) with the uplink quantizer and sends
the message to the server; the server averages the dequantized gradients, its optimizer (``--optimizer adam``)
steps its full-precision weights x, and it sends Q(x) back, packed with the downlink quantizer; every worker (the
server's own worker included) computes its next gradient at Q(x). Rank 0 is the server (role ``server``) and also
one of the N workers; its full-precision weights live in this policy, the model holds Q(x) on every rank.

Settings: ``quantizer`` (uplink: ``scaled-sign``, 1 bit; ``uniform`` with ``bits_up`` bits and ``stochastic``
rounding; ``identity``, float32), ``error_feedback``, ``bits_down`` (downlink: uniform with that many bits; 32 =
the weights as float32), ``delta`` (downlink on the weight grid δ·round(x/δ) instead). Messages are really packed
(repro/sync/quantize.py): a worker's payload (``comm_bytes``) is steps × its packed gradient size; wire bytes: a
worker sends its message and receives the server's; the server receives N − 1 messages and sends N − 1 (its own
worker's exchange stays inside the process). One gather and one broadcast a step.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from repro.context import assigns_roles
from repro.errors import UsageError
from repro.sync import SYNC_POLICIES, SyncPolicy, float_buffers
from repro.sync.quantize import ErrorFeedback, Packed, check_bits, pack, unpack, wire_bytes

SERVER_RANK = 0
SERVER_ROLE = "server"
UPLINK_QUANTIZERS = ("scaled-sign", "uniform", "identity")


class QuantizedParameterServer(SyncPolicy):
    metric_columns = ("bytes_up_per_step", "bytes_down_per_step")

    def __init__(self, quantizer: str, bits_up: int, bits_down: int, error_feedback: bool, stochastic: bool,
                 delta: float | None, context=None):
        super().__init__(context)
        if quantizer not in UPLINK_QUANTIZERS:
            raise UsageError(f"quantized-ps: quantizer must be one of {', '.join(UPLINK_QUANTIZERS)}, got {quantizer!r}")
        bits_up = check_bits(bits_up, "quantized-ps bits_up")
        bits_down = check_bits(bits_down, "quantized-ps bits_down")
        if quantizer == "scaled-sign" and bits_up != 1:
            raise UsageError(f"quantized-ps: the scaled-sign quantizer sends 1 bit, got bits_up={bits_up}")
        if quantizer == "identity" and bits_up != 32:
            raise UsageError(f"quantized-ps: the identity quantizer sends 32 bits, got bits_up={bits_up}")
        for name, value in (("error_feedback", error_feedback), ("stochastic", stochastic)):
            if not isinstance(value, bool):
                raise UsageError(f"quantized-ps: {name} must be true or false, got {value!r}")
        if stochastic and quantizer != "uniform":
            raise UsageError("quantized-ps: stochastic rounding is an option of the uniform quantizer")
        if delta is not None and not (isinstance(delta, (int, float)) and delta > 0):
            raise UsageError(f"quantized-ps: delta (the weight grid) must be > 0, got {delta!r}")
        self.bits_up, self.bits_down = bits_up, bits_down
        self.up_name = quantizer
        self.up_options = {"bits": bits_up, "stochastic": stochastic} if quantizer == "uniform" else {}
        if delta is not None:
            self.down_name, self.down_options = "grid", {"delta": float(delta)}
        elif bits_down == 32:
            self.down_name, self.down_options = "identity", {}
        else:
            self.down_name, self.down_options = "uniform", {"bits": bits_down}
        self.error_feedback = error_feedback
        self.stochastic = stochastic
        # stochastic rounding's draws, on the device the gradients live on (a CUDA generator on a GPU)
        self.generator = torch.Generator(device=self.context.device).manual_seed(
            self.context.seed * 7919 + 17 * self.context.rank + 1)
        self._params: list[torch.Tensor] = []
        self._feedback: list[ErrorFeedback] = []
        self.full: list[torch.Tensor] | None = None  # the server's full-precision weights (rank 0 only)
        self._gradients_this_step = 0
        self.last_up_bytes = 0
        self.last_down_bytes = 0

    @property
    def is_server(self) -> bool:
        return self.context.rank == SERVER_RANK

    # -- hooks --------------------------------------------------------------------------------------------------
    def wrap(self, model):
        self._params = [p for p in model.parameters() if p.requires_grad]
        options = dict(self.up_options)
        if self.stochastic:
            options["generator"] = self.generator
        self._feedback = [ErrorFeedback(self.up_name, **options) for _ in self._params]
        if self.is_server:
            self.full = [p.detach().clone() for p in self._params]
        # Every rank holds the same initial weights: each quantizes them itself (the downlink quantizer is
        # deterministic), which is what the server would send.
        self._set_weights(self._quantized_weights([p.detach() for p in self._params]))
        return model

    def before_step(self, model):
        self._gradients_this_step = 0

    def on_gradients(self, model):
        self._gradients_this_step += 1
        if self._gradients_this_step > 1:
            raise UsageError("quantized-ps: the optimizer evaluated a second gradient in one step; the parameter "
                             "server takes one gradient per step (use an optimizer such as adam)")
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        messages = []
        for feedback, g in zip(self._feedback, grads):
            if self.error_feedback:
                messages.append(feedback.send(g.detach())[0])
            else:
                options = dict(feedback.opts)
                messages.append(pack(g.detach(), self.up_name, **options))
        buffer = _serialize(messages)
        self.last_up_bytes = buffer.numel()
        world = self.context.world
        if self.context.distributed:
            gathered = [torch.empty_like(buffer) for _ in range(world)] if self.is_server else None
            dist.gather(buffer, gathered, dst=SERVER_RANK, group=self.context.world_group)
        else:
            gathered = [buffer]
        if self.is_server:
            total = [torch.zeros_like(p, dtype=torch.float32) for p in self._params]
            for rank_buffer in gathered:  # in rank order: the same sum on every run
                for acc, message in zip(total, _deserialize(rank_buffer, messages)):
                    acc += unpack(message).float()
            with torch.no_grad():
                for p, x, acc in zip(self._params, self.full, total):
                    p.copy_(x)  # the optimizer steps the full-precision weights
                    p.grad = (acc / world).to(p.dtype)
            self.book(buffer.numel(), 0, (world - 1) * buffer.numel())
        else:
            for p in self._params:
                p.grad = None  # the optimizer skips them: only the server steps
            self.book(buffer.numel(), buffer.numel(), 0)

    def after_step(self, model):
        if self.is_server:
            self.full = [p.detach().clone() for p in self._params]
            messages = self._quantized_weights(self.full)
            buffer = _serialize(messages)
            length = torch.tensor([buffer.numel()], dtype=torch.int64, device=buffer.device)
        else:
            messages, buffer = None, None
            length = torch.zeros(1, dtype=torch.int64, device=self.context.device)
        framing = 0
        if self.context.distributed:
            if self.down_name == "grid":  # the grid's message size depends on the weights: send it first
                dist.broadcast(length, SERVER_RANK, group=self.context.world_group)
                framing = length.numel() * length.element_size()
            if buffer is None:
                size = int(length) if self.down_name == "grid" else self._down_bytes()
                buffer = torch.empty(size, dtype=torch.uint8, device=self.context.device)
            dist.broadcast(buffer, SERVER_RANK, group=self.context.world_group)
        if messages is None:
            messages = _deserialize(buffer, self._down_layout())
        self._set_weights(messages)
        size = buffer.numel() + framing
        self.last_down_bytes = size
        others = self.context.world - 1
        if self.is_server:
            self.book(0, others * size, 0, rounds=0)
        else:
            self.book(0, 0, size, rounds=0)

    def _quantized_weights(self, weights: list[torch.Tensor]) -> list[Packed]:
        return [pack(w, self.down_name, **self.down_options) for w in weights]

    @torch.no_grad()
    def _set_weights(self, messages: list[Packed]) -> None:
        for p, message in zip(self._params, messages):
            p.copy_(unpack(message))

    def _down_bytes(self) -> int:
        """The downlink message's size when it does not depend on the weights (every quantizer but the grid)."""
        return sum(wire_bytes(self.down_name, p.numel(), **self.down_options) for p in self._params)

    def _down_layout(self) -> list[Packed]:
        """Templates of the downlink messages (quantizer, shapes, dtypes) for reading the server's buffer."""
        return [Packed(self.down_name, torch.empty(0, dtype=torch.uint8), torch.empty(0), p.shape, p.dtype,
                       self.bits_down, dict(self.down_options)) for p in self._params]

    # -- evaluation, metrics, checkpoints -----------------------------------------------------------------------
    def _eval_tensors(self, model):
        return float_buffers(model)  # the weights are Q(x) on every rank already

    def epoch_metrics(self, model, score):
        return {"bytes_up_per_step": self.last_up_bytes, "bytes_down_per_step": self.last_down_bytes}

    def state_dict(self):
        return {**super().state_dict(), "full": self.full, "generator": self.generator.get_state(),
                "residuals": [f.residual for f in self._feedback]}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        # a checkpoint is read onto the CPU: the tensors go back to the device the gradients live on
        device = self.context.device
        if state.get("full") is not None:
            self.full = [t.to(device, copy=True) for t in state["full"]]
        self.generator.set_state(state["generator"])
        for feedback, residual in zip(self._feedback, state["residuals"]):
            feedback.residual = None if residual is None else residual.to(device)


def _serialize(messages: list[Packed]) -> torch.Tensor:
    """The messages as one byte buffer: each message's scales (as bytes) then its codes."""
    parts = []
    for m in messages:
        parts.append(m.scales.reshape(-1).view(torch.uint8))
        parts.append(m.codes.reshape(-1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)


def _deserialize(buffer: torch.Tensor, layout: list[Packed]) -> list[Packed]:
    """Messages shaped like ``layout`` read back from ``_serialize``'s buffer."""
    from math import ceil, prod

    out, at = [], 0
    for m in layout:
        n = prod(m.shape)
        if m.name == "identity":
            scales, bits, width_bytes = torch.empty(0), 32, 0
            code_bytes = 4 * n
        elif m.name == "grid":
            scales = buffer[at:at + 9].clone()
            bits = int(scales[8])
            width_bytes = 9
            code_bytes = ceil(n * bits / 8)
        else:
            scales = buffer[at:at + 4].clone().view(torch.float32)
            bits, width_bytes = m.bits, 4
            code_bytes = ceil(n * bits / 8)
        at += width_bytes
        out.append(Packed(m.name, buffer[at:at + code_bytes], scales, m.shape, m.dtype, bits, dict(m.options)))
        at += code_bytes
    if at != buffer.numel():
        raise RuntimeError(f"quantized-ps: a message of {buffer.numel()} bytes, {at} expected")
    return out


@assigns_roles
def _server_role(spec: dict, world: int) -> dict[int, str]:
    sync = (spec or {}).get("sync") or {}
    name = sync.get("name") if isinstance(sync, dict) else sync
    return {SERVER_RANK: SERVER_ROLE} if name == "quantized-ps" else {}


def check_optimizer(optimizer: str) -> None:
    """The server takes one gradient per step: refuse an optimizer that evaluates several (before workers start)."""
    from repro.optim import gradients_per_step

    if gradients_per_step(optimizer) > 1:
        raise UsageError(f"quantized-ps: optimizer {optimizer} evaluates {gradients_per_step(optimizer)} gradients per "
                         "step; the parameter server steps on one averaged gradient (use e.g. adam)")


@SYNC_POLICIES.register("quantized-ps")
def quantized_ps(quantizer: str = "scaled-sign", bits_up: int = 1, bits_down: int = 32, error_feedback: bool = True,
                 stochastic: bool = False, delta: float | None = None, context=None):
    return QuantizedParameterServer(quantizer, bits_up, bits_down, error_feedback, stochastic, delta, context)


# The component table's sync check calls a builder's check_config(options, config) with the whole run config.
quantized_ps.check_config = lambda options, config: check_optimizer(config.optimizer.name)
