"""Crash: from step ``at_step`` the faulty workers stop contributing. ``mode`` "freeze": they stop stepping and
resend their last model (a stale peer); "drop": their rows leave the aggregate. Emulated in the exchange, since a
process that really ends would end a torch.distributed run."""
from repro.errors import UsageError
from repro.byzantine import register


@register("crash", acts_on="exchange")
def crash(at_step: int = 0, mode: str = "drop"):
    if not isinstance(at_step, int) or isinstance(at_step, bool) or at_step < 0:
        raise UsageError(f"crash at_step must be an integer >= 0, got {at_step!r}")
    if mode not in ("drop", "freeze"):
        raise UsageError(f"crash mode must be drop or freeze, got {mode!r}")
    return None
