"""What config.json records about the machine: the system facts come from collect_env's own probes, without the
rest of its report (pip, conda, compilers: 0.6 s of every run's start-up)."""
from torch.utils import collect_env

from repro import runlog


def test_system_facts_equal_collect_envs_full_report():
    full = collect_env.get_env_info()
    env = runlog.environment()
    assert (env["cuda_runtime"], env["nvidia_driver"], env["os"], env["libc"]) == \
        (full.cuda_runtime_version, full.nvidia_driver_version, full.os, full.libc_version)
    assert env["os"]  # a probe that found nothing would make both sides None
    assert env["packages"]["torch"].split("+")[0] == env["torch"].split("+")[0]
