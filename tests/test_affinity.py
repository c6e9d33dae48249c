"""--pin-cores: each local process of a sweep gets a disjoint block of whole physical cores,
on its GPU's NUMA node where that is known."""
import json
import os
import subprocess
import sys

import pytest

from tts_diffusion.bench.affinity import parse_cpulist, physical_cores, plan


def _no_smt(c):
    return [c]


def _smt(n_cores):
    """Linux numbering of a 2-way SMT host: cpu c and c + n_cores share a core."""
    return lambda c: sorted({c % n_cores, c % n_cores + n_cores})


def test_parse_cpulist_reads_the_kernel_format():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5]
    assert parse_cpulist("") == []


def test_physical_cores_keep_hyperthreads_together():
    assert physical_cores(range(8), _smt(4)) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert physical_cores([0, 1, 5], _smt(4)) == [[0], [1, 5]]  # a sibling outside the set is left out


def test_processes_on_one_node_split_its_cores_disjointly():
    nodes = {0: range(0, 16), 1: range(16, 32)}
    blocks = plan([0, 0, 1, 1], range(32), nodes.__getitem__, _no_smt)
    assert blocks == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24)), list(range(24, 32))]


def test_a_process_gets_both_threads_of_its_cores_and_uneven_splits_differ_by_one_core():
    blocks = plan([0, 0, 0], range(10), lambda n: range(10), _smt(5))
    assert blocks == [[0, 5, 1, 6], [2, 7, 3, 8], [4, 9]]
    assert sorted(c for b in blocks for c in b) == list(range(10))


def test_unknown_node_or_too_small_a_node_splits_every_allowed_core():
    assert plan([None, None], range(4), lambda n: [], _no_smt) == [[0, 1], [2, 3]]
    # node 1 holds one core for two processes: fall back to all allowed cores over all processes
    nodes = {0: [0, 1, 2, 3, 4, 5], 1: [6]}
    assert plan([1, 1, 0], range(7), nodes.__getitem__, _no_smt) == [[0, 1, 2], [3, 4], [5, 6]]
    # cpus outside this process's affinity are never handed out
    assert plan([0, 0], [2, 3, 6, 7], lambda n: range(8), _no_smt) == [[2, 3], [6, 7]]


def test_more_processes_than_cores_share_them_round_robin():
    assert plan([None] * 3, [0, 1], lambda n: [], _no_smt) == [[0], [1], [0]]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_pin_sets_this_process_affinity_to_its_block():
    """In a child process (pinning is process-wide): local rank 1 of 2 on the cores it may use."""
    code = ("import json, os; from tts_diffusion.bench.affinity import pin; "
            "before = sorted(os.sched_getaffinity(0)); got = pin(1, 2); "
            "print(json.dumps([before, got, sorted(os.sched_getaffinity(0))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, got, after = json.loads(out)
    assert got == after and got and set(got) <= set(before)
    if len(before) >= 2:
        assert len(got) < len(before)  # a share, not every core
