"""What every searcher owes its callers, checked for each registered searcher on an exact
(analytic) model: its options are declared and validated before any model work, its minimum
budget is exact, per-particle state follows every selection (`proc.select`), results do not
depend on the chunk size, and non-finite verifier scores never win."""
import math
import warnings

import pytest
import torch
from click.testing import CliRunner

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.cli import main
from tts_diffusion.core.state import current_call
from tts_diffusion.searchers import available_searchers, load_searcher, min_budget, searcher_params
from tts_diffusion.testing.analytic import FunctionVerifier, analytic_process, four_modes_2d
from tts_diffusion.verifiers import load_verifier
from tts_diffusion.verifiers.base import FunctionVerifier as PlainFunctionVerifier
from tts_diffusion.verifiers import available_verifiers, verifier_params

STEPS = 6
#: small settings of every searcher for a 6-step analytic model, and a budget they fit in
SETTINGS = {
    "best_of_n": {"num_samples": 4},
    "zero_order": {"num_children": 2, "num_rounds": 2},
    "paths": {"num_particles": 2, "num_children": 3},
    "smc": {"num_particles": 4, "resample_interval": 1, "resample_threshold": 1.0},
    "fkc": {"num_particles": 4, "mode": "cfg"},
    "rbf": {"num_particles": 2, "init_pool": 3},
    "svdd": {"num_particles": 2, "num_children": 3},
    "code": {"num_particles": 2, "num_children": 3},
    "driftlite": {"num_particles": 4, "target": "anneal", "resample_threshold": 1.0},
    "reflect": {"num_samples": 3, "num_particles": 2, "num_rounds": 1, "refine": "image", "strength": 0.5,
                "critic": "none"},
    "draft_commit": {"num_samples": 4, "top_k": 2, "draft": "preview", "draft_steps": 3},
    "evo": {"evolution_schedule": (0, 2, 4), "population_size_schedule": (3, 2, 2, 2), "elite_size": 1},
    "noise_opt": {"num_samples": 2, "num_iterations": 1, "reg_weight": 0.0},
    # das returns its largest final weight by default (pick=weight, tests/test_das.py); here the best score
    "das": {"num_particles": 2, "resample_threshold": 1.0, "pick": "score"},
}
ALL = sorted(SETTINGS)


def reward(x):
    return -((x - torch.tensor([1.0, -2.2], dtype=x.dtype)) ** 2).sum(1)


def make_proc(max_batch=1 << 16):
    g = four_modes_2d()
    return analytic_process({"": g, "a": g}, "flow", STEPS, cfg_scale=2.0, max_batch=max_batch)


def run(name, proc, verifier=None, budget=None, seed=0, **extra):
    opts = {**SETTINGS[name], **extra}
    budget = Budget(budget if budget is not None else min_budget(name, STEPS, **opts) + 3)
    verifier = verifier or FunctionVerifier(reward, 2)
    if load_searcher(name).entry.needs_gradient:  # noise_opt: these rewards are torch functions of x
        verifier.differentiable = True
    return load_searcher(name)(proc, verifier, "a", budget,
                               torch.Generator().manual_seed(seed), **opts)


def test_every_registered_searcher_is_covered():
    assert set(available_searchers()) == set(ALL)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("name", ALL)
def test_spec_parses_good_values_and_rejects_bad_ones(name):
    spec = searcher_params(name)
    assert "keep_images" in spec.names()
    for p in spec:  # every default round-trips through the CLI parser; every help is one line
        assert p.help and "\n" not in p.help
        if p.default is not None:
            text = ",".join(map(str, p.default)) if isinstance(p.default, tuple) else str(p.default)
            assert spec.parse([f"{p.name}={text}"]) == {p.name: p.default}
    ints = [p.name for p in spec if p.type is int]
    for bad in ("abc", "1.7", "true", "-1", "0" if name != "paths" else "-3"):
        with pytest.raises(TTSInputError, match=f"searcher '{name}' option {ints[0]}="):
            spec.parse([f"{ints[0]}={bad}"])
    floats = [p.name for p in spec if p.type is float]
    for key in floats:
        for bad in ("NaN", "inf", "abc"):
            with pytest.raises(TTSInputError, match=f"option {key}="):
                spec.parse([f"{key}={bad}"])
    with pytest.raises(TTSInputError, match=f"searcher '{name}' has no option 'lam'; valid: .*keep_images"):
        spec.parse(["lam=1"])
    with pytest.raises(TTSInputError, match="KEY=VALUE"):
        spec.parse(["num_particles"])


@pytest.mark.parametrize("name", ALL)
def test_bad_options_fail_before_any_model_work(name):
    proc = make_proc()
    ver = FunctionVerifier(reward, 2)
    search = load_searcher(name)
    bad = [{"n": 4}, {"lam": 1.0}, {"keep_images": 0}, {"keep_images": "3"}, {"keep_images": True}]
    int_key = next(p.name for p in searcher_params(name) if p.type is int and p.name != "keep_images")
    bad += [{int_key: 1.7}, {int_key: "abc"}, {int_key: True}]
    for kw in bad:
        budget = Budget(10_000)
        with pytest.raises(TTSInputError, match=f"searcher '{name}'"):
            search(proc, ver, "a", budget, torch.Generator(), **kw)
        assert budget.nfe == 0 and budget.verifier_calls == 0 and ver.calls == 0


def test_resampling_options_mean_the_same_in_smc_and_fkc():
    for name in ("smc", "fkc"):
        spec = searcher_params(name)
        thr = spec.get("resample_threshold")
        assert (thr.low, thr.high) == (0.0, 1.0)
        for bad in ("1.5", "-0.1", "NaN"):
            with pytest.raises(TTSInputError):
                spec.parse([f"resample_threshold={bad}"])
        assert spec.get("resampling").choices == ("multinomial", "systematic", "stratified", "residual")
    # 1: a resampling at every potential step; 0: never
    for name, potentials in (("smc", range(1, STEPS)), ("fkc", range(STEPS))):
        always = run(name, make_proc(), resample_threshold=1.0)
        never = run(name, make_proc(), resample_threshold=0.0)
        assert always.settings["resample_steps"] == list(potentials), name
        assert never.settings["resample_steps"] == [], name


def test_smc_window_checked_against_the_grid():
    spec = searcher_params("smc")
    with pytest.raises(TTSInputError, match="window"):
        spec.parse(["window=5"])
    for window in ((3, 2), (0, STEPS + 1), (-1, 3), (2, 2)):
        proc = make_proc()
        trace = proc.call.register("trace", InputTrace())
        with pytest.raises(TTSInputError, match=r"window=\("):
            run("smc", proc, window=window, budget=100)
        assert trace.resets == 0  # refused before any noise was drawn
    assert spec.parse(["window=1,4"]) == {"window": (1, 4)}


@pytest.mark.parametrize("name", ALL)
def test_minimum_budget_is_exact(name):
    """The documented minimum runs; one NFE less is an error that states the numbers."""
    need = min_budget(name, STEPS, **SETTINGS[name])
    res = run(name, make_proc(), budget=need)
    assert res.nfe <= need
    with pytest.raises(TTSInputError, match=r"\d+ NFE"):
        run(name, make_proc(), budget=need - 1)
    # defaults: the same contract (reflect's default critic needs a prompt with objects in it;
    # the analytic world's prompt "a" has none, so it runs without a critique)
    extra = {"critic": "none"} if name == "reflect" else {}
    if name == "driftlite":  # its default target tilts by the reward's gradient; this verifier has none
        extra = {"target": "anneal"}
    need = min_budget(name, STEPS)
    proc = make_proc()
    v = FunctionVerifier(reward, 2)
    v.differentiable = load_searcher(name).entry.needs_gradient  # noise_opt: a torch function of x
    load_searcher(name)(proc, v, "a", Budget(need), torch.Generator().manual_seed(0), **extra)
    with pytest.raises(TTSInputError):
        load_searcher(name)(proc, v, "a", Budget(need - 1), torch.Generator(), **extra)


def test_minimum_budget_values():
    assert min_budget("paths", 20) == 129
    assert min_budget("best_of_n", 20) == 20 and min_budget("best_of_n", 20, num_samples=3) == 60
    assert min_budget("rbf", 10) == 2 * (25 + 9)
    assert min_budget("fkc", 10, mode="product", num_particles=2) == 40
    with pytest.raises(TTSInputError, match="searcher 'smc' has no option"):
        min_budget("smc", 10, lam=3)


def test_cli_list_prints_spec_and_minimum_budget():
    r = CliRunner().invoke(main, ["list", "--searcher", "paths", "--steps", "20"])
    assert r.exit_code == 0 and "minimum budget at 20 steps: 129 NFE" in r.output
    assert "num_children" in r.output and "an integer >= 1" in r.output
    r = CliRunner().invoke(main, ["list", "--searcher", "rbf"])  # the searcher's own default steps
    assert r.exit_code == 0 and "minimum budget at 10 steps: 68 NFE" in r.output
    r = CliRunner().invoke(main, ["list", "--searcher", "best_of_n", "-o", "num_samples=3", "--steps", "5"])
    assert "15 NFE" in r.output
    for args in (["--searcher", "nope"], ["--searcher", "smc", "-o", "lam=NaN"], ["--steps", "3"],
                 ["--searcher", "smc", "--steps", "0"], ["--verifier", "nope"]):
        r = CliRunner().invoke(main, ["list", *args])
        assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, (args, r.output)
    r = CliRunner().invoke(main, ["list", "--verifier", "clip"])
    assert r.exit_code == 0 and "chunk_size" in r.output


# ------------------------------------------------------------ verifier options
BUILTIN_VERIFIERS = ("aesthetic", "clip", "ensemble", "image_reward", "oracle")


def test_builtin_verifiers_are_registered():
    assert set(BUILTIN_VERIFIERS) <= set(available_verifiers())


@pytest.mark.parametrize("name", BUILTIN_VERIFIERS)
def test_verifier_options_checked_before_construction(name):
    spec = verifier_params(name)
    assert "chunk_size" in spec.names() and "dtype" in spec.names()
    for kw, key in (({"chunk_size": 0}, "chunk_size=0"), ({"chunk_size": "abc"}, "chunk_size='abc'"),
                    ({"dtype": "fp64"}, "dtype='fp64'"), ({"chunk_size": 2.5}, "chunk_size=2.5")):
        with pytest.raises(TTSInputError, match=f"verifier '{name}' option {key}"):
            load_verifier(name, **kw)
    with pytest.raises(TTSInputError, match=f"verifier '{name}' has no option 'n'; valid: .*chunk_size"):
        load_verifier(name, n=3)
    with pytest.raises(TTSInputError, match=f"verifier '{name}' option chunk_size"):
        spec.parse(["chunk_size=0"])
    assert spec.parse(["chunk_size=8", "dtype=fp16"]) == {"chunk_size": 8, "dtype": "fp16"}


def test_oracle_options_reach_the_verifier():
    assert load_verifier("oracle", chunk_size=3).chunk_size == 3


# --------------------------------------------------------- particle state
class InputTrace:
    """Per-particle state: the model input each particle row last had. A model hook writes
    it from `current_call().rows`; `select` moves it, `reset` clears it. When a searcher
    steps x, x must equal these rows: the state followed the particles."""

    def __init__(self):
        self.n, self.x, self.selects, self.resets = 0, None, 0, 0

    def reset(self, n):
        self.n, self.x = int(n), None
        self.resets += 1

    def select(self, idx):
        self.n = int(idx.numel())
        self.x = None if self.x is None else self.x[idx]
        self.selects += 1


def traced(proc):
    trace = proc.call.register("trace", InputTrace())
    forward = proc.adapter.forward

    def hook(x, t, embeds):
        call = current_call()
        rows, entry = call.rows, call.get("trace")
        m = rows.stop - rows.start
        assert rows.stop <= entry.n, f"rows {rows} forwarded for a population of {entry.n}"
        if entry.x is None:
            entry.x = torch.full((entry.n, *x.shape[1:]), math.nan, dtype=x.dtype)
        entry.x[rows] = x[:m]  # with CFG the model sees [x, x]
        return forward(x, t, embeds)

    proc.adapter.forward = hook
    for method in ("transition", "vp_transition"):
        original = getattr(proc.family, method)

        def check(x, *args, _original=original, **kw):
            assert trace.x is not None and trace.x.shape[0] >= x.shape[0]
            assert torch.equal(trace.x[: x.shape[0]], x), "per-particle state did not follow the particles"
            return _original(x, *args, **kw)

        setattr(proc.family, method, check)
    return trace


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("max_batch", [1, 3])
def test_particle_state_follows_every_selection(name, max_batch):
    proc = make_proc(max_batch)
    trace = traced(proc)
    res = run(name, proc)
    assert trace.resets >= 1
    if name in ("paths", "smc", "fkc", "rbf", "svdd", "code", "driftlite"):
        assert trace.selects >= 1
    assert res.nfe > 0


def test_guard_the_trace_catches_a_searcher_that_reorders_by_hand():
    """The same check fails for a loop that permutes x without `proc.select`."""
    proc = make_proc(3)
    traced(proc)
    cond = proc.encode("a")
    x = proc.sample_noise(4, torch.Generator().manual_seed(0))
    pred = proc.denoise(x, 0, cond)
    flip = torch.tensor([3, 2, 1, 0])
    with pytest.raises(AssertionError, match="did not follow"):
        proc.step(x[flip], 0, pred.index(flip))
    x, pred = proc.select(flip, x, pred)
    proc.step(x, 0, pred)


@pytest.mark.parametrize("name", ALL)
def test_results_do_not_depend_on_max_batch(name):
    runs = [run(name, make_proc(mb), seed=5) for mb in (1, 3, 16)]
    for r in runs[1:]:
        assert r.nfe == runs[0].nfe and r.verifier_calls == runs[0].verifier_calls
        assert r.scores == pytest.approx(runs[0].scores, abs=1e-9)
        assert r.best_score == pytest.approx(runs[0].best_score, abs=1e-9)


# ------------------------------------------------------------ verifier scores
class FirstRowNaN(FunctionVerifier):
    """The analytic reward, except that the first image of every call scores NaN."""

    name = "first_row_nan"

    def score(self, images, prompts):
        s = super().score(images, prompts).clone()
        s[0] = math.nan
        return s


@pytest.mark.parametrize("name", ALL)
def test_nan_scores_are_never_the_best(name):
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = run(name, make_proc(), FirstRowNaN(reward, 2))
    finite = [s for s in res.scores if math.isfinite(s)]
    assert math.isfinite(res.best_score) and res.best_score == max(finite)
    assert any(s == -math.inf for s in res.scores)  # the first final image of each call
    assert res.settings["nonfinite_scores"] >= 1


def test_nan_best_of_n_exact_case():
    """[NaN, 1, 2, 3]: the 3 wins (it used to be the NaN)."""
    scores = iter([[math.nan, 1.0, 2.0, 3.0]])

    def fixed(images, prompts):
        return next(scores)

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = load_searcher("best_of_n")(make_proc(), fixed, "a", Budget(4 * STEPS), torch.Generator())
    assert res.scores == [-math.inf, 1.0, 2.0, 3.0] and res.best_score == 3.0
    assert sum("non-finite" in str(x.message) for x in w) == 1


@pytest.mark.parametrize("bad", [lambda b: torch.zeros(b, 1), lambda b: torch.zeros(b + 1), lambda b: "x",
                                 lambda b: torch.zeros(()), lambda b: torch.zeros(b, dtype=torch.complex64)])
def test_wrong_score_shape_is_an_error_naming_the_verifier(bad):
    def broken(images, prompts):
        return bad(images.shape[0])

    with pytest.raises(TTSInputError, match="verifier 'broken'"):
        load_searcher("best_of_n")(make_proc(), broken, "a", Budget(2 * STEPS), torch.Generator())


def test_plain_callable_is_a_verifier():
    def brightness(images, prompts):
        assert isinstance(prompts, list) and prompts == ["a"] * images.shape[0]
        return images.mean(dim=(1, 2, 3)).tolist()

    v = load_verifier(brightness)
    assert isinstance(v, PlainFunctionVerifier) and v.name == "brightness"
    res = load_searcher("best_of_n")(make_proc(), brightness, "a", Budget(3 * STEPS), torch.Generator().manual_seed(0))
    assert len(res.candidates) == 3 and res.best_score == max(res.scores)
    with pytest.raises(TTSInputError, match="a verifier must be"):
        load_verifier(42)
    with pytest.raises(TTSInputError, match="registered verifier name only"):
        load_verifier(brightness, chunk_size=4)


def test_pipeline_takes_a_plain_callable_and_validates_searcher_options(tiny_pipe):
    from tts_diffusion import TTSPipeline
    from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs

    tts = TTSPipeline(tiny_pipe("flux"))
    kw = {k: v for k, v in pipeline_call_kwargs("flux").items() if k in ("height", "width")}

    def brightness(images, prompts):
        return images.mean(dim=(1, 2, 3))

    res = tts("a red circle", verifier=brightness, progress=False, num_inference_steps=2, budget=6, **kw)
    assert len(res.candidates) == 3 and res.settings["verifier"] == "brightness"
    with pytest.raises(TTSInputError, match="searcher 'best_of_n' has no option 'n'"):
        tts("a red circle", verifier=brightness, progress=False, num_inference_steps=2, budget=6, n=3, **kw)
