"""Gradient all-reduce before every optimizer step: the naive parallel baseline (minibatch SGD over
N x local batch). With clipped-sgd the step is then clipped with the averaged gradient's norm.

``bucketed=True`` (default) is what a user would write with DDP: the trainer trains through
``DistributedDataParallel``, whose reducer all-reduces the gradients in buckets (25 MB) as backward produces them,
overlapped with the rest of backward; a communication hook (torch's ``allreduce_hook``) averages each bucket and
books its bytes. Backward returns with the averaged ``.grad``, so the optimizer (and clipping) sees exactly what the
flat version gives. ``bucketed=False``: one flattened all-reduce of all gradients after backward (nothing
overlapped), kept to measure the difference (benchmarks/every_step_buckets.py).

Counting is the same either way: one round per gradient evaluation (the paper's one round per step; SGDOL's two
gradients are two rounds), payload = all gradients' bytes (the buckets partition them, no padding); wire bytes: the
ring all-reduce of each bucket (2(N-1)/N x its bytes each way), the flat version's of the one flat tensor.
"""
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from repro.errors import UsageError
from repro.sync import SYNC_POLICIES, SyncPolicy, float_buffers, parameters_with_grads, ring_all_reduce_bytes


class GradientAllReduce(SyncPolicy):
    def __init__(self, bucketed: bool = True, context=None):
        super().__init__(context)
        if not isinstance(bucketed, bool):
            raise UsageError(f"bucketed must be true or false, got {bucketed!r}")
        self.bucketed = bucketed
        self._ddp: _ModelDDP | None = None
        self._bucket_bytes = 0  # bytes the hook all-reduced during the current backward
        self._bucket_wire = 0  # their ring all-reduces' wire bytes (each way)

    def wrap(self, model):
        if not self.bucketed or not self.context.distributed:
            return model
        # forward_sync_buffers=False: BatchNorm statistics stay local, as in the flat version (averaged for
        # evaluation only). init_sync=False: the workers already hold the same weights (broadcast_model), and a
        # resumed run's local buffers must not be replaced by rank 0's. No find_unused_parameters: every task uses
        # all parameters (DDP raises otherwise), so no extra graph traversal per step.
        self._ddp = _ModelDDP(model, process_group=self.context.world_group, forward_sync_buffers=False,
                              init_sync=False)
        self._ddp.register_comm_hook(self, _counted_allreduce)
        return self._ddp

    def on_gradients(self, model):
        if self._ddp is not None:  # DDP averaged the gradients during backward
            if not self._bucket_bytes:
                raise RuntimeError("every-step: backward did not run through the DDP wrapper from wrap()")
            self.book(self._bucket_bytes, self._bucket_wire, self._bucket_wire)
            self._bucket_bytes = self._bucket_wire = 0
            return
        params = parameters_with_grads(model)
        for p in params:  # a parameter unused this batch still takes part: every worker sends the same layout
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._all_reduce_mean([p.grad for p in params])

    def synchronize(self, model):
        # Parameters are already identical; BatchNorm statistics are local, so average them for evaluation.
        self._all_reduce_mean(float_buffers(model))

    def _eval_tensors(self, model):
        return float_buffers(model)  # parameters are identical on every worker already


class _ModelDDP(DistributedDataParallel):
    """DDP that lends the model's own attributes (the LM task's ``model.init_hidden``) to the task."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _counted_allreduce(policy: GradientAllReduce, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """torch's averaging hook (divide by the world size, all-reduce asynchronously), its payload booked."""
    buffer = bucket.buffer()
    payload = buffer.numel() * buffer.element_size()
    policy._bucket_bytes += payload
    policy._bucket_wire += ring_all_reduce_bytes(payload, policy.context.world, policy.context.rank)
    return allreduce_hook(policy.context.world_group, bucket)


@SYNC_POLICIES.register("every-step")
def every_step(bucketed: bool = True, context=None):
    return GradientAllReduce(bucketed, context)
