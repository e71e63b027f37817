"""Model averaging every ``interval`` local steps (local SGD / CELGC): parameters and float buffers."""
from repro.errors import UsageError
from repro.sync import SYNC_POLICIES, SyncPolicy, float_state


class PeriodicAveraging(SyncPolicy):
    def __init__(self, interval: int, context=None):
        super().__init__(context)
        if interval < 1:
            raise UsageError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self.steps_since_sync = 0

    def after_step(self, model):
        self.steps_since_sync += 1
        if self.steps_since_sync == self.interval:
            self.synchronize(model)

    def synchronize(self, model):
        # Averaging twice in a row is a no-op, so evaluation right after a scheduled sync costs nothing.
        if self.steps_since_sync and self.context.distributed:
            # one flattened all-reduce copied back into the model's own tensors (torch's average_parameters
            # rebinds each p.data to a view of its buffer: NCHW again for channels_last weights, new storage)
            self._all_reduce_mean(float_state(model))
        self.steps_since_sync = 0

    def _eval_tensors(self, model):
        # Right after a scheduled average every worker holds the same model: nothing to send.
        return [] if self.steps_since_sync == 0 else float_state(model)

    def state_dict(self):
        return {**super().state_dict(), "steps_since_sync": self.steps_since_sync}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.steps_since_sync = state["steps_since_sync"]


@SYNC_POLICIES.register("periodic")
def periodic(interval: int = 1, context=None):
    return PeriodicAveraging(interval, context)
