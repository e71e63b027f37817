"""No communication: N independent workers. Evaluation reports the mean of the workers' own metrics."""
from repro.sync import SYNC_POLICIES, SyncPolicy


@SYNC_POLICIES.register("none")
def no_sync():
    return SyncPolicy()
