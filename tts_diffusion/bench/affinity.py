"""`bench --pin-cores`: each process of a multi-GPU sweep on CPU cores of its own, next to its GPU.

The embedded model's searches are bound by Python and kernel launches, so a process's speed
is its CPU thread's. Left to the scheduler, N processes (each with its torch worker threads)
may share physical cores and, on hosts with several NUMA nodes, run far from their GPUs.
`plan` gives each local process a disjoint block of whole physical cores on the NUMA node of
its GPU (or of all allowed cores where the node is unknown); `pin` applies it to this process.
Opt-in: on a 4 x H100 host with one NUMA node it gave no gain (docs/benchmarks.md).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

SYS = Path("/sys")


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def physical_cores(cpus: Sequence[int], siblings: Callable[[int], Sequence[int]]) -> list[list[int]]:
    """`cpus` grouped by physical core (hyper-threads together), in order of each core's first
    cpu; `siblings(c)`: the cpus sharing c's core (c included)."""
    allowed, seen, cores = set(cpus), set(), []
    for c in sorted(allowed):
        if c in seen:
            continue
        core = sorted(allowed & {c, *siblings(c)})
        seen.update(core)
        cores.append(core)
    return cores


def plan(nodes: Sequence[int | None], allowed: Sequence[int], node_cpus: Callable[[int], Sequence[int]],
         siblings: Callable[[int], Sequence[int]]) -> list[list[int]]:
    """The cpus of each local process: `nodes[i]` is the NUMA node of process i's GPU (None if
    unknown). Processes on one node split that node's allowed physical cores into contiguous,
    disjoint blocks (the first blocks one core larger where they do not divide evenly); if any
    node is unknown or has fewer allowed cores than processes, all allowed cores are split
    over all processes the same way. A process never gets an empty list: with fewer cores
    than processes, processes share cores round-robin."""
    usable = set(allowed)
    allowed = sorted(usable)
    groups: dict[int | None, list[int]] = {}
    for i, n in enumerate(nodes):
        groups.setdefault(n, []).append(i)
    pools = {n: physical_cores([c for c in node_cpus(n) if c in usable], siblings)
             for n in groups if n is not None}
    if None in groups or any(len(pools[n]) < len(ranks) for n, ranks in groups.items()):
        groups, pools = {None: list(range(len(nodes)))}, {None: physical_cores(allowed, siblings)}
    out: list[list[int]] = [[] for _ in nodes]
    for n, ranks in groups.items():
        cores = pools[n]
        if len(cores) < len(ranks):  # more processes than cores: share them round-robin
            for j, r in enumerate(ranks):
                out[r] = cores[j % len(cores)] if cores else list(allowed)
            continue
        per, extra = divmod(len(cores), len(ranks))
        start = 0
        for j, r in enumerate(ranks):
            size = per + (j < extra)
            out[r] = [c for core in cores[start:start + size] for c in core]
            start += size
    return out


def gpu_numa_node(index: int) -> int | None:
    """The NUMA node of CUDA device `index` (from its PCI address in sysfs), or None."""
    import torch

    p = torch.cuda.get_device_properties(index)
    try:
        address = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
        node = int((SYS / "bus/pci/devices" / address / "numa_node").read_text())
    except (AttributeError, OSError, ValueError):
        return None
    return node if node >= 0 else None


def _node_cpus(node: int) -> list[int]:
    try:
        return parse_cpulist((SYS / f"devices/system/node/node{node}/cpulist").read_text())
    except OSError:
        return []


def _siblings(cpu: int) -> list[int]:
    try:
        return parse_cpulist((SYS / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text())
    except OSError:
        return [cpu]


def pin(local_index: int, local_processes: int) -> list[int] | None:
    """Pin this process (local rank `local_index` of `local_processes`, one CUDA device each,
    device i for rank i) to its block of cores; returns the cpus, or None where the platform
    cannot set affinity."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    nodes = [gpu_numa_node(i) if i < visible else None for i in range(local_processes)]
    cpus = plan(nodes, sorted(os.sched_getaffinity(0)), _node_cpus, _siblings)[local_index]
    os.sched_setaffinity(0, cpus)
    return cpus
