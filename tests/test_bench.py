"""`tts-diffusion bench`: records keyed by prompt/method/budget/seed, an interrupted sweep
resumes to the same records, the records do not depend on how prompts are split over
processes, and each record agrees with the same search run through `TTSPipeline`."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tts_diffusion.bench import SweepConfig, balanced_subset, canonical, load_prompt_set, read_records, run_sweep
from tts_diffusion.bench.summary import summarize
from tts_diffusion.paths import default_model_path

pytestmark = pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(),
                                reason="embedded shapes model missing")

#: a tiny sweep of the embedded model: 6 prompts (one per category), 2 steps
SMALL = dict(methods=["best_of_n", "smc"], budgets=[1, 2], num_prompts=6, steps=2, device="cpu",
             options={"smc": {"num_particles": 2}})


def _sweep(out: Path, **kw) -> dict:
    return run_sweep(SweepConfig(out=out, **{**SMALL, **kw}), echo=lambda s: None)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("bench") / "full.jsonl"
    _sweep(out)
    return out, read_records(out)


def test_records_cover_every_cell_once(full):
    out, recs = full
    keys = [(r["prompt"], r["method"], r["budget"], r["seed"]) for r in recs]
    assert len(keys) == len(set(keys)) == 6 * 3  # smc with 2 particles cannot run at 1x: no record there
    assert {r["budget"] for r in recs if r["method"] == "smc"} == {2}
    assert {r["method"] for r in recs} == {"best_of_n", "smc"}
    assert all(r["nfe"] <= r["budget"] * 2 for r in recs)
    assert all(r["hit"] == float(r["judge_score"] >= 1 - 1e-6) for r in recs)  # oracle judge: pass/fail
    assert not list(out.parent.glob("full.jsonl.part*"))  # parts merged and removed
    summary = json.loads(out.with_name("full.summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["cells"]["smc"]["2"]["n"] == 6


def test_interrupted_sweep_resumes_to_the_same_records(full, tmp_path):
    _, recs = full
    out = tmp_path / "resumed.jsonl"
    lines = [json.dumps(r) for r in recs]
    out.write_text("\n".join(lines[:7]) + "\n" + lines[7][:25])  # killed in the middle of a line
    summary = _sweep(out)
    assert summary["new_records"] == len(recs) - 7  # only the missing cells ran (the torn line among them)
    assert canonical(read_records(out)) == canonical(recs)


def test_record_is_the_search_tts_pipeline_runs_with_that_seed(full):
    """The record of prompt k (seed s) holds the score of TTSPipeline's search seeded
    100003 * s + k: seeds come from the prompt's index, not its place in a shard."""
    from tts_diffusion import TTSPipeline

    _, recs = full
    tts = TTSPipeline.from_pretrained(None, torch_dtype=torch.float32)
    tts.set_progress_bar_config(disable=True)
    for r in [r for r in recs if r["budget"] == 2][:: 5]:
        res = tts(r["text"], searcher=r["method"], budget=4, num_inference_steps=2, verifier="oracle",
                  generator=torch.Generator().manual_seed(100003 * r["seed"] + r["prompt"]), max_batch=64,
                  **({"num_particles": 2} if r["method"] == "smc" else {}))
        assert res.best_score == pytest.approx(r["score"], abs=1e-6)


def test_resume_refuses_a_file_of_another_sweep(full, tmp_path):
    from tts_diffusion import TTSInputError

    out = tmp_path / "other.jsonl"
    out.write_text(full[0].read_text())
    with pytest.raises(TTSInputError, match="steps"):
        _sweep(out, steps=3)
    with pytest.raises(TTSInputError, match="options"):
        _sweep(out, options={"smc": {"num_particles": 3}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_records_of_one(full, tmp_path):
    """torchrun-style launch, 2 CPU processes (gloo, pinned to cores of their own): prompts
    claimed one at a time, records gathered: the same records as one process."""
    pytest.importorskip("accelerate")
    out = tmp_path / "two.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "tts_diffusion.cli", "bench", "--methods", "best_of_n,smc", "--budgets", "1,2", "--num-prompts", "6",
           "--steps", "2", "--device", "cpu", "-o", "smc.num_particles=2", "--pin-cores", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 2 process(es)" in proc.stdout
    assert canonical(read_records(out)) == canonical(full[1])
    # the sweep's time is its slowest share's: both processes report, and searches add up
    summary = json.loads(out.with_name("two.summary.json").read_text())
    shares = summary["process_shares"]
    assert [s["process"] for s in shares] == [0, 1]
    # --pin-cores: each process on a block of its own of this machine's cores
    cores = len(os.sched_getaffinity(0))
    assert all(s["cpus"] >= 1 for s in shares) and sum(s["cpus"] for s in shares) <= max(cores, 2)
    assert sum(s["searches"] for s in shares) == sum(not r["seconds_estimated"] for r in read_records(out))
    assert shares[0]["seconds"] <= summary["run_seconds"]  # the main process waited for the other
    # each process times from its own start, which the barrier before the sweep aligns to well under 1 s
    assert max(s["seconds"] for s in shares) <= summary["run_seconds"] + 1.0


def test_summary_values_are_exact():
    recs = [{"method": "m", "budget": 1, "category": c, "hit": h, "judge_score": h, "nfe": 3, "seconds": 1.0}
            for c, h in [("a", 1.0), ("a", 0.0), ("b", 1.0), ("b", 1.0)]]
    cell = summarize(recs, ["m"], [1, 2], 3)["cells"]["m"]
    assert cell["1"]["value"] == 0.75 and cell["1"]["per_category"] == {"a": 0.5, "b": 1.0}
    assert cell["1"]["stderr"] == pytest.approx((0.25 / 4) ** 0.5)  # sample std 0.5 / sqrt(4)
    assert "2" not in cell
    recs[0]["hit"] = None  # a non-oracle judge: mean judge score
    assert summarize(recs, ["m"], [1], 3)["metric"] == "mean judge score"


def test_balanced_subset_keeps_indices_and_grows_by_prefix():
    prompts = load_prompt_set()
    small, big = balanced_subset(prompts, 6), balanced_subset(prompts, 12)
    assert {i for i, _ in small} <= {i for i, _ in big} and len(small) == 6 and len(big) == 12
    assert all(prompts[i] == p for i, p in big)
    assert len({p["category"] for _, p in small}) == 6


@pytest.mark.parametrize("args, message", [
    (["--methods", "nope"], "unknown searcher 'nope'"),
    (["--budgets", "1,x"], "--budgets must be"),
    (["--budgets", "0"], "--budgets must be positive"),
    (["--methods", "smc", "-o", "smc.reward_scale=abc"], "reward_scale"),
    (["--methods", "smc", "-o", "reward_scale=1"], "METHOD.KEY=VALUE"),
    (["--methods", "smc", "-o", "best_of_n.num_samples=2"], "not in --methods"),
    (["--judge", "nope"], "--judge"),
    (["--prompts", "/no/such/prompts.json"], "prompt set"),
    (["--num-prompts", "0"], "--num-prompts"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--reward-guidance-option", "rho=1"], "needs --reward-guidance VERIFIER"),
    (["--reward-guidance", "oracle"], "not differentiable"),
    (["--reward-guidance", "clip", "--reward-guidance-option", "preset=nope"], "preset"),
])
def test_bad_options_one_error_line_exit_2(args, message):
    from click.testing import CliRunner

    from tts_diffusion.cli import main

    r = CliRunner().invoke(main, ["bench", *args, "--out", "/tmp/never-written.jsonl"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines() if hasattr(r, "stderr") else r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert not Path("/tmp/never-written.jsonl").exists()


def test_verifier_on_its_own_device_scores_the_same():
    """OnDevice moves images to the verifier's device and the scores back (CPU to CPU here:
    the plumbing; a second GPU is the use)."""
    from tts_diffusion.bench.placement import OnDevice
    from tts_diffusion.testing.helpers import BrightnessVerifier

    images = torch.rand(5, 3, 8, 8)
    inner = BrightnessVerifier(chunk_size=2)
    placed = OnDevice(inner, torch.device("cpu"))
    assert torch.equal(placed(images, "a red circle"), BrightnessVerifier()(images, "a red circle"))
    assert placed.device == torch.device("cpu") and inner.calls == 5


def test_default_threads_share_the_cores_between_processes(monkeypatch):
    """Each process gets half of its share of the cores, 1 to 4: N bench processes on one host
    must not each start torch's default of every core (a 64-core sweep stalled that way)."""
    import os

    from tts_diffusion.threads import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert [default_threads(n) for n in (1, 4, 8, 16, 64)] == [4, 4, 4, 2, 1]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [default_threads(n) for n in (1, 2)] == [1, 1]


def test_claim_hands_every_item_to_exactly_one_process_and_a_fast_one_takes_more():
    """Prompts are claimed one at a time from the process group's store: two workers sharing
    a store take every item once between them, and one that is slower takes fewer."""
    import threading
    import time

    import torch.distributed as dist

    from tts_diffusion.bench.placement import claim

    class Two:  # the PartialState attributes claim reads
        num_processes = 2

    store, items, taken = dist.HashStore(), list(range(40)), {0: [], 1: []}

    def worker(w: int, delay: float) -> None:
        for it in claim(Two(), items, store=store, key="sweep"):
            taken[w].append(it)
            time.sleep(delay)

    threads = [threading.Thread(target=worker, args=(0, 0.001)), threading.Thread(target=worker, args=(1, 0.02))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken[0] + taken[1]) == items
    assert len(taken[0]) > 2 * len(taken[1])


def test_equal_seconds_interpolates_in_log_seconds():
    """A method twice as slow per NFE is read at the reference's seconds: between its own
    points, linearly in log seconds; outside them, None."""
    def rec(m, b, hit, secs):
        return {"method": m, "budget": b, "category": "a", "hit": hit, "judge_score": hit, "nfe": b, "seconds": secs}

    recs = [rec("best_of_n", 1, 0.0, 1.0), rec("best_of_n", 2, 1.0, 2.0), rec("best_of_n", 4, 1.0, 4.0),
            rec("slow", 1, 0.0, 2.0), rec("slow", 2, 1.0, 4.0), rec("slow", 4, 1.0, 8.0)]
    s = summarize(recs, ["best_of_n", "slow"], [1, 2, 4], 1)
    eq = s["equal_seconds"]
    assert eq["reference"] == "best_of_n" and eq["seconds"] == [1.0, 2.0, 4.0]
    assert eq["value"]["best_of_n"] == [0.0, 1.0, 1.0]
    # slow: 0 at 2 s, 1 at 4 s: None at 1 s (before its first point), 0 at 2 s, 1 at 4 s
    assert eq["value"]["slow"] == [None, 0.0, 1.0]
    recs.append(rec("slow", 8, 1.0, 16.0))
    recs[3]["hit"] = recs[3]["judge_score"] = 0.5
    eq = summarize(recs, ["best_of_n", "slow"], [1, 2, 4, 8], 1)["equal_seconds"]
    assert eq["value"]["slow"][1] == 0.5  # at 2 s exactly its 1x point
    from tts_diffusion.bench.summary import _interp_log
    assert _interp_log([(1.0, 0.0), (4.0, 1.0)], 2.0) == pytest.approx(0.5)  # log2: halfway


def test_pooled_sweep_shares_one_budget_per_cell(tmp_path):
    """`bench --pool`: the prompts of a (method, budget, seed) cell share budget x prompts
    samples; with stop_score the prompts that pass early leave NFE to the others, the total
    never exceeds the pool, and the allotments follow the documented rule."""
    out = tmp_path / "pool.jsonl"
    summary = _sweep(out, methods=["best_of_n"], budgets=[2], pool=True,
                     options={"best_of_n": {"stop_score": 1.0, "round_size": 1}})
    recs = sorted(read_records(out), key=lambda r: r["prompt"])
    assert len(recs) == 6 and all(r["pool_ledger"]["total"] == 6 * 2 * 2 for r in recs)
    assert sum(r["nfe"] for r in recs) <= 6 * 2 * 2
    order = sorted(recs, key=lambda r: [p for p, _ in balanced_subset(load_prompt_set(), 6)].index(r["prompt"]))
    left = 24
    for i, r in enumerate(order):
        assert r["pool_ledger"]["allotted"][0] == left // (6 - i)  # pass 1: the even split of what is left
        left -= r["pool_ledger"]["spent"][0]
    assert summary["cells"]["best_of_n"]["2"]["n"] == 6
    assert summary["searches_per_second"] == pytest.approx(6 / summary["run_seconds"])  # each prompt searched


def test_guided_sweep_records_the_guided_search_and_refuses_an_unguided_resume(tmp_path):
    """`bench --reward-guidance`: each record is TTSPipeline's search with the same guidance and
    seed, the guidance is part of the sweep's settings (a resume without it is refused)."""
    from tts_diffusion import TTSInputError, TTSPipeline
    from tts_diffusion.features.guidance_spec import RewardGuidance

    guide = RewardGuidance.build(verifier="clip", preset="mpgd")
    out = tmp_path / "guided.jsonl"
    prompts = tmp_path / "one.txt"
    prompts.write_text("two red circles\n")
    run_sweep(SweepConfig(out=out, methods=["best_of_n"], budgets=[1], prompt_set=str(prompts), steps=2, device="cpu",
                          verifier="clip", judge="oracle", reward_guidance=guide), echo=lambda s: None)
    (r,) = read_records(out)
    assert r["reward_guidance"]["preset"] == "mpgd" and r["reward_guidance"]["verifier"] == "clip"
    tts = TTSPipeline.from_pretrained(None, torch_dtype=torch.float32)
    tts.set_progress_bar_config(disable=True)
    kw = dict(searcher="best_of_n", budget=2, num_inference_steps=2, verifier="clip", max_batch=64,
              generator=torch.Generator().manual_seed(r["prompt"]))
    guided = tts(r["text"], reward_guidance=guide, **kw)
    assert guided.best_score == pytest.approx(r["score"], abs=1e-5)
    kw["generator"] = torch.Generator().manual_seed(r["prompt"])
    assert tts(r["text"], **kw).best_score != pytest.approx(r["score"], abs=1e-5)  # the guidance acted
    with pytest.raises(TTSInputError, match="reward_guidance"):
        run_sweep(SweepConfig(out=out, methods=["best_of_n"], budgets=[1], prompt_set=str(prompts), steps=2,
                              device="cpu", verifier="clip", judge="oracle"), echo=lambda s: None)
