"""No communication: N independent workers. Evaluation reports the mean of the workers' own metrics."""
from repro.sync import SYNC_POLICIES, SyncPolicy


class NoSync(SyncPolicy):
    averages_for_evaluation = False  # N independent workers: each scores its own model


@SYNC_POLICIES.register("none")
def no_sync(context=None):
    return NoSync(context)
