"""Gradient all-reduce before every optimizer step: the naive parallel baseline (minibatch SGD over
N x local batch). With clipped-sgd the step is then clipped with the averaged gradient's norm."""
import torch

from repro.sync import SYNC_POLICIES, SyncPolicy, float_buffers, parameters_with_grads


class GradientAllReduce(SyncPolicy):
    def on_gradients(self, model):
        params = parameters_with_grads(model)
        for p in params:  # a parameter unused this batch still takes part: every worker sends the same layout
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._all_reduce_mean([p.grad for p in params])

    def synchronize(self, model):
        # Parameters are already identical; BatchNorm statistics are local, so average them for evaluation.
        self._all_reduce_mean(float_buffers(model))


@SYNC_POLICIES.register("every-step")
def every_step():
    return GradientAllReduce()
