"""A Ray cluster on this host, on loopback, for tests and benchmarks: a head and optional worker nodes.

In a deployment each organisation starts its own cluster (docs/operations.md, "Compute backends");
this stands in for one of them. Each node is its own set of Ray processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_cluster(head_cpus: int, worker_nodes: int = 0, cpus_per_node: int = 1) -> Iterator[str]:
    """Start a head with `head_cpus` CPUs and `worker_nodes` more nodes; yield the address roles connect to."""
    # Ray swaps 127.0.0.1 for the host's own address unless told, before it is first imported, that it runs no
    # multi-host cluster; this keeps the nodes, this process and the roles it starts on loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules and sys.modules["ray"]._private.ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("ray was imported before local_cluster: its addresses would leave loopback")
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                            **loopback})
    try:
        for _ in range(worker_nodes):
            cluster.add_node(num_cpus=cpus_per_node, **loopback)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
