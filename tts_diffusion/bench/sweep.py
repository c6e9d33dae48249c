"""One sweep: methods x budgets x prompts x seeds, each search guided by a verifier and its
returned image scored by a judge (for the shapes world: the exact oracle), one JSON Lines
record per (prompt, method, budget, seed).

Prompts are sharded over processes (`accelerate launch --multi_gpu --num_processes N -m
tts_diffusion.cli bench ...`, one GPU each; or `torchrun --nproc_per_node N -m tts_diffusion.cli
bench --device cuda:0 ...`, N processes sharing one GPU): each process holds a whole copy of
the pipeline and claims prompts one at a time from a counter in the process group's store
(`placement.claim`), so a faster process takes more; the records are gathered
(`gather_object`) and written by the main process. A search's seed is `seed * 100003 + prompt index`
(the prompt's position in its set), so the records do not depend on the split.

Prefix-consistent searchers (best_of_n, zero_order: a run at budget B is the first part of a
run at a larger budget) run once at the largest budget still missing and are read off at the
smaller ones (their `seconds` then scale the run's time by the NFE share, and
`seconds_estimated` says so); the others run once per budget. A budget below a method's
minimum gives no record.

Each search is a `SearchRequest` run by `TTSPipeline.run`, as `generate` runs one: the sweep's
settings are checked by the same `SearchRequest.check` before any model work (so `bench`
refuses what `generate` refuses), and the embedded model's prompts go through the same
rewriting to the canonical prompts it was trained on."""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TTSInputError
from ..request import CLI_NAMES, SearchRequest
from ..threads import default_threads
from . import records as rec_io
from .placement import OnDevice, claim, gather, process_state
from .prompts import SHAPES_EVAL, balanced_subset, load_prompt_set
from .readout import PASS, fit_to_budget, judge_score, picked

#: a run at budget B is the first part of a run at a larger budget
PREFIX_CONSISTENT = frozenset({"best_of_n", "zero_order"})
#: seed of prompt k's search: SEED_STRIDE * seed + k
SEED_STRIDE = 100003


@dataclass
class SweepConfig:
    """What `tts-diffusion bench` runs (fields as its options; see `check`)."""

    out: Path
    methods: list[str] = field(default_factory=lambda: ["best_of_n"])
    budgets: list[int] = field(default_factory=lambda: [1, 4, 16])
    prompt_set: str = SHAPES_EVAL
    num_prompts: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    model: str | None = None
    verifier: str | None = None
    judge: str | None = None
    steps: int | None = None
    guidance: float | None = None
    max_batch: int = 64
    options: dict[str, dict] = field(default_factory=dict)
    verifier_options: dict = field(default_factory=dict)
    device: str | None = None
    verifier_device: str | None = None
    dtype: str = "auto"
    compile: bool = False
    #: torch CPU threads per process (None: `default_threads` of this process's share of the cores)
    threads: int | None = None
    #: pin each local process to a block of cores of its own, next to its GPU (`affinity.pin`)
    pin_cores: bool = False
    preview_decoder: str | None = None
    #: one shared budget per (method, budget, seed) over all the prompts (`run_pooled_cell`)
    pool: bool = False
    #: TFG reward guidance of every search (`features/guidance_spec.py`; None: off)
    reward_guidance: Any = None

    def check(self) -> "SweepConfig":
        """Validate every field before any model work (TTSInputError naming the option)."""
        from ..pipelines import checks
        from ..paths import is_default_model
        from ..request import default_verifier_name
        from ..searchers import available_searchers, searcher_params
        from ..verifiers import available_verifiers

        if self.threads is not None and self.threads < 1:
            raise TTSInputError(f"--threads must be at least 1, got {self.threads}")
        if not self.methods:
            raise TTSInputError("--methods names no searcher; e.g. --methods best_of_n,smc")
        for m in self.methods:
            if m not in available_searchers():
                raise TTSInputError(f"unknown searcher {m!r} in --methods; "
                                    f"available: {', '.join(available_searchers())}")
        if len(set(self.methods)) != len(self.methods):
            raise TTSInputError(f"--methods names a searcher twice: {','.join(self.methods)}")
        unknown = set(self.options) - set(self.methods)
        if unknown:
            raise TTSInputError(f"-o names {', '.join(sorted(unknown))}, which is not in --methods")
        self.options = {m: searcher_params(m).validate(self.options.get(m, {})) for m in self.methods}
        if not self.budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.budgets):
            raise TTSInputError(f"--budgets must be positive integers (multiples of one sample's NFE), "
                                f"got {self.budgets}")
        self.budgets = sorted(set(self.budgets))
        if not self.seeds:
            raise TTSInputError("--seeds names no seed")
        for s in self.seeds:
            checks.check_seed(s)
        checks.check_positive_int(self.num_prompts, "--num-prompts")
        default = default_verifier_name(is_default_model(self.model))
        self.verifier = self.verifier or default
        self.judge = self.judge or default
        for what, v in (("--verifier", self.verifier), ("--judge", self.judge)):
            if v not in available_verifiers():
                raise TTSInputError(f"unknown verifier {v!r} for {what}; available: {', '.join(available_verifiers())}")
        for d in (self.device, self.verifier_device):
            if d is not None:
                checks.check_device(d)
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise TTSInputError(f"--dtype must be auto, float32, float16 or bfloat16, got {self.dtype!r}")
        self.out = Path(self.out)
        if self.out.is_dir():
            raise TTSInputError(f"--out {self.out} is a folder; name a .jsonl file")
        prompts = [p["prompt"] for p in load_prompt_set(self.prompt_set)]  # readable and non-empty
        for m in self.methods:  # every search of the sweep, as `generate` checks one
            self.request(m, prompts).check(embedded_model=is_default_model(self.model), names=CLI_NAMES)
        if self.preview_decoder is not None and not (Path(self.preview_decoder).expanduser() / "config.json").is_file():
            raise TTSInputError(f"--preview-decoder {self.preview_decoder} is not a folder with a diffusers config.json"
                                f" (a TAESD-format AutoencoderTiny)")
        return self

    def request(self, method: str, prompt: str | list[str]) -> SearchRequest:
        """The search of `method` on `prompt` (budget and seed are each cell's)."""
        return SearchRequest(prompt, searcher=method, searcher_options=self.options.get(method, {}),
                             verifier=self.verifier, verifier_options=self.verifier_options,
                             num_inference_steps=self.steps, guidance_scale=self.guidance, max_batch=self.max_batch,
                             process_options={"preview_decoder": self.preview_decoder} if self.preview_decoder else {},
                             reward_guidance=self.reward_guidance)


def setting(cfg: SweepConfig, steps: int, guidance: float | None) -> dict:
    """The fields every record of the sweep shares (a resumed sweep must match them)."""
    out = {"model": cfg.model or "embedded shapes model", "steps": steps, "guidance": guidance,
           "verifier": cfg.verifier, "judge": cfg.judge, "prompt_set": cfg.prompt_set,
           "preview_decoder": cfg.preview_decoder, "reward_guidance": None}
    if cfg.reward_guidance is not None:
        from ..features.guidance_spec import RewardGuidance

        out["reward_guidance"] = dataclasses.asdict(RewardGuidance.parse(cfg.reward_guidance))
    return {**out, "pool": True} if cfg.pool else out


def run_sweep(cfg: SweepConfig, echo: Callable[[str], None] = print) -> dict | None:
    """Run the searches `cfg.out` does not hold yet (this process's share of them), write
    the merged records, and return the summary on the main process (None on the others)."""
    from ..pipelines import TTSPipeline, checks
    from ..searchers import min_budget
    from .summary import summarize, write_summary

    cfg.check()
    t_start = time.perf_counter()
    # --device pins every process to one device (several may share a GPU): the processes then
    # talk over gloo; otherwise accelerate gives each process its own GPU (NCCL)
    state = process_state(cpu=cfg.device is not None)
    device = torch.device(cfg.device) if cfg.device is not None else state.device
    cpus = _pin(cfg, state)
    # CPU threads on every device: the oracle judge and CPU verifiers run here too, and N
    # processes with every core each starve one another
    torch.set_num_threads(cfg.threads or default_threads(1 if cpus else state.num_processes))
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        cfg.dtype, torch.float16 if device.type == "cuda" else torch.float32)
    checks.check_dtype_on_device(dtype, device)
    indexed = balanced_subset(load_prompt_set(cfg.prompt_set), cfg.num_prompts)

    tts = TTSPipeline.from_pretrained(cfg.model, torch_dtype=dtype, compile=cfg.compile)
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    template = cfg.request(cfg.methods[0], "")
    base = tts.process(cfg.steps, cfg.guidance, max_batch=cfg.max_batch, **template.process_options)
    steps = base.num_steps
    guide = tts.get_verifier(cfg.verifier, **cfg.verifier_options)
    judge = guide if cfg.judge == cfg.verifier and not cfg.verifier_options else tts.get_verifier(cfg.judge)
    if cfg.verifier_device is not None:  # both on their own device; scores come back to the model's
        same = judge is guide
        guide = OnDevice(guide, torch.device(cfg.verifier_device))
        judge = guide if same else OnDevice(judge, torch.device(cfg.verifier_device))
    shared = setting(cfg, steps, base.guidance_scale)

    # what is missing: budgets each method can pay for, less the records already written
    done = rec_io.load_done(cfg.out)
    rec_io.check_same_sweep(done, shared, cfg.options, cfg.out)
    feasible = {m: [b for b in cfg.budgets if _fits(min_budget, m, b * steps, steps, cfg.options[m])]
                for m in cfg.methods}
    todo = []
    for k, p in indexed:
        missing = {(m, s): [b for b in feasible[m] if (k, m, b, s) not in done]
                   for m in cfg.methods for s in cfg.seeds}
        missing = {ms: bs for ms, bs in missing.items() if bs}
        if missing:
            todo.append((k, p, missing))
    state.wait_for_everyone()  # every process planned from the same file before any writes to it

    if state.is_main_process:
        n_searches = sum(len(bs) for _, _, mi in todo for bs in mi.values())
        echo(f"{len(indexed)} prompts x {len(cfg.methods)} methods x {len(cfg.budgets)} budgets x {len(cfg.seeds)} "
             f"seeds at {steps} steps on {state.num_processes} process(es); {len(done)} records already in "
             f"{cfg.out}, {n_searches} prompt-budget cells to run")
    mine: list[dict] = []
    writer = rec_io.Appender(rec_io.part_path(cfg.out, state.process_index))
    t_run = time.perf_counter()
    if cfg.pool:  # each (method, budget, seed) is one pooled call over every prompt: the main process runs them
        todo = []
        cells = sorted({(m, b, s) for k, _ in indexed for m in cfg.methods for s in cfg.seeds for b in feasible[m]
                        if (k, m, b, s) not in done})
        for m, b, s in (cells if state.is_main_process else []):
            request = dataclasses.replace(cfg.request(m, [p["prompt"] for _, p in indexed]), verifier=guide,
                                          verifier_options={}, num_inference_steps=base.num_inference_steps)
            new = run_pooled_cell(tts, request, judge, indexed, s, b, steps, guide_is_judge=judge is guide)
            for r in new:
                r.update(shared)
            writer.write(new)
            mine.extend(new)
    for k, p, missing in claim(state, todo):  # prompts one at a time from a shared counter
        for (m, s), bs in missing.items():
            request = dataclasses.replace(cfg.request(m, p["prompt"]), verifier=guide, verifier_options={},
                                          num_inference_steps=base.num_inference_steps)
            new = run_cell(tts, request, judge, k, p, s, bs, steps, guide_is_judge=judge is guide)
            for r in new:
                r.update(shared)
            writer.write(new)
            mine.extend(new)
    share_seconds = time.perf_counter() - t_run
    state.wait_for_everyone()  # the sweep ends with its slowest share
    run_seconds = time.perf_counter() - t_run
    everything = gather(state, mine)
    shares = gather(state, [{"process": state.process_index, "seconds": share_seconds, "searches": _searches(mine),
                        "cpus": len(cpus) if cpus else None}])
    summary = None
    if state.is_main_process:
        merged = {rec_io.key(r): r for r in [*done.values(), *everything]}
        rec_io.write_merged(cfg.out, list(merged.values()))
        summary = summarize(list(merged.values()), cfg.methods, cfg.budgets, steps)
        summary.update(shared, processes=state.num_processes, device=_device_name(device),
                       new_records=len(everything), run_seconds=run_seconds,
                       wall_seconds=time.perf_counter() - t_start,
                       searches_per_second=_searches(everything) / run_seconds if run_seconds > 0 else None,
                       process_shares=sorted(shares, key=lambda r: r["process"]))
        write_summary(summary, cfg.out, echo)
    state.wait_for_everyone()
    return summary


def _pin(cfg: SweepConfig, state) -> list[int] | None:
    """With --pin-cores and several processes on this host, pin this one to its block of cores
    (`affinity.pin`); returns its cpus, or None if unpinned."""
    from .affinity import pin

    local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    if not cfg.pin_cores or local < 2:
        return None
    return pin(getattr(state, "local_process_index", state.process_index), local)


def _fits(min_budget, method: str, nfe: int, steps: int, options: dict) -> bool:
    try:
        return min_budget(method, steps, **fit_to_budget(method, nfe, steps, options)) <= nfe
    except TTSInputError:
        return False


def _searches(records: list[dict]) -> int:
    """Searches actually run: a prefix read-off is not a search of its own; each prompt of a
    pooled cell is (its seconds are the pooled call's, spread by NFE)."""
    return sum(not r.get("seconds_estimated", False) or "pool_ledger" in r for r in records)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def run_pooled_cell(tts, request: SearchRequest, judge, indexed: list[tuple[int, dict]], seed: int, budget: int,
                    steps: int, guide_is_judge: bool) -> list[dict]:
    """`bench --pool`: the prompts of `request` (a list, `indexed` in that order) share
    `budget` x len(prompts) samples' NFE (pipelines/budget_pool.py's rule; stop when satisfied
    through the method's `stop_score` option); prompt k's generator is seeded as in an
    unpooled sweep (SEED_STRIDE * seed + k), so pooled and even records pair up, and the options
    are fitted to the even share as an unpooled cell's are (`fit_to_budget`: rbf / svdd / code).
    One record per prompt: the NFE it spent, its allotments, the seconds of the whole pooled
    call spread by NFE."""
    gens = [torch.Generator().manual_seed(SEED_STRIDE * seed + k) for k, _ in indexed]
    opts = fit_to_budget(request.searcher, budget * steps, steps, dict(request.searcher_options))
    t0 = time.perf_counter()
    res = tts.run(dataclasses.replace(request, budget=None, seed=None, searcher_options=opts), generator=gens,
                  progress=False, budget_pool=budget * steps * len(indexed))
    dt = time.perf_counter() - t0
    total = max(1, sum(r.nfe for r in res))
    out = []
    for (k, p), r in zip(indexed, res):
        js = judge_score(r.best, p["prompt"], judge, guide_is_judge)
        out.append({"prompt": k, "text": p["prompt"], "category": p["category"], "method": request.searcher,
                    "budget": budget, "seed": seed, "nfe": r.nfe, "score": float(r.best.score), "judge_score": js,
                    "hit": float(js >= PASS) if judge.name == "oracle" else None,
                    "seconds": dt * r.nfe / total, "seconds_estimated": True, "run_seconds": dt,
                    "pool_ledger": r.settings["pool"], "stopped_early": r.settings.get("stopped_early"),
                    "options_given": dict(request.searcher_options),
                    "options": {kk: v for kk, v in opts.items() if kk != "keep_images"}})
    return out


def run_cell(tts, request: SearchRequest, judge, k: int, p: dict, seed: int, budgets: list[int], steps: int,
             guide_is_judge: bool) -> list[dict]:
    """The records of one prompt (`k`: its index, which seeds the search), method and seed at
    `budgets` (multiples of one sample of `steps` NFE): the unit of a sweep, also called
    in-process by scripts with loops of their own (scripts/bench_tgate.py). `request`: the
    search of prompt `p` (its searcher, the options given, the guiding verifier, steps, ...);
    each run sets its budget and seed and goes through `tts.run`."""
    method, options = request.searcher, dict(request.searcher_options)
    prefix = method in PREFIX_CONSISTENT
    keep = 10**6 if prefix and not guide_is_judge else 1  # read-offs judge images of smaller budgets
    runs = [max(budgets)] if prefix else budgets
    out = []
    for b in runs:
        opts = fit_to_budget(method, b * steps, steps, {"keep_images": keep, **options})
        t0 = time.perf_counter()
        try:
            res = tts.run(dataclasses.replace(request, searcher_options=opts, budget=b * steps,
                                              seed=SEED_STRIDE * seed + k), progress=False)
        except TTSInputError:
            continue
        dt = time.perf_counter() - t0
        for bb in (budgets if prefix else [b]):
            c = picked(res, bb * steps, steps)
            js = judge_score(c, p["prompt"], judge, guide_is_judge)
            nfe = min(res.nfe, bb * steps)
            out.append({"prompt": k, "text": p["prompt"], "category": p["category"], "method": method,
                        "budget": bb, "seed": seed, "nfe": nfe, "score": None if c is None else float(c.score),
                        "judge_score": js, "hit": float(js >= PASS) if judge.name == "oracle" else None,
                        "seconds": dt * nfe / max(res.nfe, 1) if bb != b else dt, "seconds_estimated": bb != b,
                        "run_seconds": dt, "options_given": options,
                        "options": {kk: v for kk, v in opts.items() if kk != "keep_images"}})
    return out
