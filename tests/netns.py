"""Two emulated cluster nodes on one machine (network namespaces joined by a rate-limited veth pair): the helpers
live in repro/emulated_cluster.py, which `repro reproduce --scale emulated-cluster` uses too."""
from repro.emulated_cluster import (PREFIX, SUBNET, NetnsError, NodePair, clean_environment,  # noqa: F401
                                    remove_stale, unavailable)
