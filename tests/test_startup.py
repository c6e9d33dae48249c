"""Start-up: `--help`, `--version`, `list` and a refused prompt answer without importing torch,
diffusers or transformers; the package's public names still load on first use; the registry
`list` reads is the one the searches run from (its declarations are the functions' own)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "diffusers", "transformers", "open_clip")

#: runs the CLI with the argv given as JSON; `code` is its exit code (the probes below add what they print)
_RUN_CLI = textwrap.dedent("""
    import json, sys
    sys.argv = ["tts-diffusion", *json.loads(sys.argv[1])]
    import tts_diffusion.cli as cli
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
""")
_PROBE = _RUN_CLI + textwrap.dedent("""
    print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,))


def _probe(*args: str) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))], capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stderr.strip().splitlines()[-1]), r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["generate", "--help"], ["replay", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    info, output = _probe(*args)
    assert info["code"] == 0, output
    assert info["heavy"] == [], f"{args} imported {info['heavy']}"


def test_version_is_the_package_version():
    import tts_diffusion

    info, output = _probe("--version")
    assert f"tts-diffusion, version {tts_diffusion.__version__}" in output


def test_prompt_outside_the_world_is_refused_before_torch_loads():
    info, output = _probe("generate", "a photo of a purple dragon", "--out", "/nonexistent/x.png")
    assert info["code"] == 2 and info["heavy"] == [], output
    assert "closest prompt that works is 'a photo of a purple circle'" in output


def test_prompt_outside_the_models_grammar_is_refused_before_torch_loads():
    """The shipped model's grammar (its tts_defaults.json) decides: a v1 model refuses a
    grammar-v2 prompt in one line, naming the closest v1 prompt."""
    from tts_diffusion.shapes.grammar import model_grammar

    if model_grammar() != "v1":
        pytest.skip("the shipped model speaks grammar v2")
    info, output = _probe("generate", "a red circle between two blue squares", "--out", "/nonexistent/x.png")
    assert info["code"] == 2 and info["heavy"] == [], output
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "between prompts need grammar v2, and this model speaks v1" in lines[0], output


@pytest.mark.parametrize("args,message", [
    (["-o", "nope=1"], "searcher 'best_of_n' has no option 'nope'"),
    (["--searcher", "smc", "-o", "potential=maximum"], "searcher 'smc' option potential='maximum' is not valid"),
    (["--searcher", "nope"], "unknown searcher 'nope'"),
    (["--verifier", "clip", "--verifier-option", "chunk_size=0"], "verifier 'clip' option chunk_size=0"),
])
def test_bad_searcher_and_verifier_options_are_refused_before_torch_loads(tmp_path, args, message):
    info, output = _probe("generate", "two red circles", "--out", str(tmp_path / "x.png"), *args)
    assert info["code"] == 2 and info["heavy"] == [], output
    assert message in output and "Traceback" not in output


def test_package_names_load_lazily():
    code = ("import sys, tts_diffusion as t; assert 'torch' not in sys.modules; "
            "from tts_diffusion import TTSPipeline, Budget, TTSInputError, available_searchers; "
            "assert 'torch' in sys.modules and TTSPipeline.__name__ == 'TTSPipeline'; "
            "assert 'best_of_n' in available_searchers(); print(sorted(t.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        import tts_diffusion

        tts_diffusion.NoSuchName  # noqa: B018


# ------------------------------------------------------------------------ list
#: `list` also stays clear of numpy (only click and the package's pure-Python modules load)
LIST_HEAVY = HEAVY + ("numpy",)

SEARCHERS = ("best_of_n", "code", "das", "draft_commit", "driftlite", "evo", "fkc", "noise_opt", "paths", "rbf", "reflect",
             "smc", "svdd", "zero_order")
VERIFIERS = ("aesthetic", "alpha", "clip", "ensemble", "image_reward", "oracle")

_LIST_PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    commands, live = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    if live:  # import every searcher's and verifier's code (torch) first
        from tts_diffusion.searchers import available_searchers, load_searcher
        from tts_diffusion.verifiers.registry import available_verifiers, verifier_factory
        [load_searcher(n) for n in available_searchers()], [verifier_factory(n) for n in available_verifiers()]
    import tts_diffusion.cli as cli
    outputs = []
    for args in commands:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                cli.main.main(["list", *args])
                code = 0
            except SystemExit as e:
                code = e.code
        outputs.append({"code": code, "out": buf.getvalue()})
    print(json.dumps({"outputs": outputs, "heavy": [m for m in %r if m in sys.modules]}))
""" % (LIST_HEAVY,))


def _list(commands: list[list[str]], live: bool) -> dict:
    """`tts-diffusion list ARGS` for each ARGS in one fresh interpreter; live: after importing
    every searcher's and verifier's code (torch), else as the console script runs it."""
    r = subprocess.run([sys.executable, "-c", _LIST_PROBE, json.dumps(commands), json.dumps(live)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


#: (searcher, --steps, -o options) with a hand-computed minimum budget
MINIMUMS = [
    ("best_of_n", 5, ["num_samples=3"], 3 * 5),
    ("paths", 20, [], 129),  # start 5, delta_f 2, delta_b 4: 5 + 4 * (4 * 5 - 1)
    ("paths", 12, ["num_children=2", "start=3", "delta_f=1", "delta_b=3"], 3 + 2 * (3 + 3 + 3 + 3 + 2)),
    ("smc", 8, ["num_particles=4"], 4 * 8),
    ("fkc", 10, ["mode=product", "num_particles=2"], 2 * 10 * 2),
    ("rbf", None, [], 2 * (25 + 10 - 1)),  # the paper's 10 steps
    ("svdd", 10, ["num_children=3"], 2 + 2 * 3 * 9),
    ("code", 6, [], 2 + 2 * 1 * 5),
    ("zero_order", 4, ["num_rounds=2", "num_children=3"], (1 + 2 * 3) * 4),
    ("reflect", 20, [], 20 + 12),  # one sample, one SDEdit child of ceil(0.6 * 20) NFE
    ("reflect", 10, ["refine=image", "strength=0.5", "num_particles=2", "num_rounds=3"], 2 * 10 + 2 * 5 * 3),
    # num_samples given, num_particles not: plan keeps its default min(2, N) = 2 chains (this minimum was 50 before)
    ("reflect", 10, ["refine=prompt", "num_samples=4"], 4 * 10 + 2 * 10),
]


def _minimum_command(name: str, steps: int | None, options: list[str]) -> list[str]:
    return ["--searcher", name, *(["--steps", str(steps)] if steps else []), *(a for o in options for a in ("-o", o))]


def test_list_does_not_import_torch():
    commands = [[], ["--searcher", "smc"], ["--verifier", "clip"], ["--searcher", "paths", "--steps", "20"],
                ["--searcher", "paths", "--steps", "20", "--verifier", "clip", "--json"]]
    info = _list(commands, live=False)
    assert info["heavy"] == [], f"list imported {info['heavy']}"
    assert [o["code"] for o in info["outputs"]] == [0, 0, 0, 0, 0]
    listing, smc, clip, paths, as_json = (o["out"] for o in info["outputs"])
    declared = json.loads(as_json)
    assert declared["searcher"]["minimum_budget"] == {"num_inference_steps": 20, "options": {}, "nfe": 129}
    start = next(o for o in declared["searcher"]["options"] if o["name"] == "start")
    assert start["default"] is None and start["type"] == "int" and start["allowed"] == "an integer >= 0"
    assert [o["name"] for o in declared["verifier"]["options"]][-2:] == ["scale", "text_cache_size"]
    assert all(f"  {name:<12} " in listing for name in SEARCHERS + VERIFIERS), listing
    assert "potential" in smc and "one of difference, max, sum, immediate" in smc
    assert "chunk_size" in clip and "text_cache_size" in clip
    assert "minimum budget at 20 steps: 129 NFE" in paths


@pytest.mark.parametrize("args", [[], ["--searcher", "reflect", "--verifier", "ensemble"]])
def test_list_command_does_not_import_torch(args):
    """The probe above runs the CLI in-process; here the command itself, as a user types it
    (`-X importtime` names every module it imports)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "tts_diffusion.cli", "list", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not {m for m in imported if m.split(".")[0] in LIST_HEAVY}


def test_list_without_torch_prints_what_the_loaded_registry_prints():
    """Every listing, every searcher's and verifier's spec and the minimum budgets, printed before
    and after the searchers' and verifiers' code is imported, are the same."""
    commands = [[], *(["--searcher", s] for s in SEARCHERS), *(["--verifier", v] for v in VERIFIERS),
                *(_minimum_command(n, s, o) for n, s, o, _ in MINIMUMS)]
    declared, live = _list(commands, live=False), _list(commands, live=True)
    assert declared["heavy"] == [] and "torch" in live["heavy"]  # the two really come from different sources
    for args, a, b in zip(commands, declared["outputs"], live["outputs"]):
        assert a["code"] == b["code"] == 0, (args, a, b)
        assert a["out"] == b["out"], args
    assert all(f"  {name:<12} " in live["outputs"][0]["out"] for name in SEARCHERS + VERIFIERS)


def test_declared_entries_are_the_registered_ones():
    """Each built-in searcher's and verifier's code registers itself with the declaration the
    registry lists (the same object, no copy that could drift), and nothing else."""
    from tts_diffusion.searchers import registry as sreg
    from tts_diffusion.verifiers import registry as vreg

    searchers = {k: s for k, s in sreg._REGISTRY.items() if s.module is not None}
    verifiers = {k: s for k, s in vreg._REGISTRY.items() if s.module is not None}
    assert set(searchers) == set(SEARCHERS) and set(verifiers) == set(VERIFIERS)
    for name, slot in searchers.items():
        fn = sreg.load_searcher(name)
        assert fn.entry is slot.entry and fn.params is slot.entry.params and fn.__module__ == slot.module
        assert sreg.searcher_entry(name) is slot.entry and sreg._REGISTRY[name] is slot
    for name, slot in verifiers.items():
        factory = vreg.verifier_factory(name)
        assert factory.entry is slot.entry and factory.__module__ == slot.module and vreg._REGISTRY[name] is slot


@pytest.mark.parametrize("name,steps,options,expected", MINIMUMS)
def test_minimum_budget_agrees_with_the_searchers_rule(name, steps, options, expected):
    """The minimum `list` prints without torch is the hand-computed one and the one the live
    `min_budget` gives; reflect's own `plan` accepts exactly that budget and not one NFE less
    (tests/test_searcher_contract.py runs every searcher at its minimum and one below)."""
    from tts_diffusion.core.budget import Budget
    from tts_diffusion.errors import TTSInputError
    from tts_diffusion.searchers import min_budget, run_defaults, searcher_params
    from tts_diffusion.searchers.reflect import plan, round_cost

    info = _list([_minimum_command(name, steps, options)], live=False)
    assert info["heavy"] == []
    n = steps or run_defaults(name)["num_inference_steps"]
    assert f"minimum budget at {n} steps" in info["outputs"][0]["out"]
    printed = int(info["outputs"][0]["out"].rsplit(": ", 1)[1].split()[0])
    opts = searcher_params(name).parse(options)
    assert printed == expected == min_budget(name, n, **opts)
    if name == "reflect":
        o = {**searcher_params(name).defaults(), **opts}
        args = (n, round_cost(n, o["refine"], o["strength"]), o["num_samples"], o["num_particles"], o["num_rounds"])
        plan(Budget(expected), *args)
        with pytest.raises(TTSInputError, match=f"at least {expected}|needs {expected}"):
            plan(Budget(expected - 1), *args)


def test_components_registered_at_run_time_are_listed():
    """User code registers a searcher and a verifier: the registry (and so `list`) shows them
    with their specs and minimum budget, and forgets them once they are unregistered."""
    from click.testing import CliRunner

    from tts_diffusion import searchers, verifiers
    from tts_diffusion.cli import main
    from tts_diffusion.params import Param
    from tts_diffusion.searchers import registry as sbase
    from tts_diffusion.verifiers import registry as vbase

    @sbase.register_searcher("user_twice", "test-only: two samples per round", min_budget=lambda n, o: 2 * n * o["k"],
                             params=[Param("k", int, 3, "rounds", low=1)], run_defaults={"budget": 60})
    def user_twice(proc, verifier, prompt, budget, generator, *, negative_prompt, k, keep_images):
        raise AssertionError("not run")

    vbase.register_verifier("user_score", "test-only: a score", params=[Param("gain", float, 2.0, "gain")])(
        lambda **o: None)
    try:
        assert searchers.available_searchers()["user_twice"] == "test-only: two samples per round"
        assert searchers.min_budget("user_twice", 5) == 30 and searchers.min_budget("user_twice", 5, k=1) == 10
        assert searchers.run_defaults("user_twice") == {"budget": 60}
        assert verifiers.verifier_params("user_score").names() == ["gain"]
        r = CliRunner().invoke(main, ["list", "--searcher", "user_twice", "--steps", "4", "--verifier", "user_score"])
        assert r.exit_code == 0 and "minimum budget at 4 steps: 24 NFE" in r.output and "gain" in r.output
        assert "user_twice" in CliRunner().invoke(main, ["list"]).output
    finally:
        sbase._REGISTRY.pop("user_twice")
        vbase._REGISTRY.pop("user_score")
    assert "user_twice" not in searchers.available_searchers() and "user_score" not in verifiers.available_verifiers()
    with pytest.raises(Exception, match="unknown searcher 'user_twice'"):
        searchers.min_budget("user_twice", 5)


def test_register_takes_an_entry_or_its_parts_not_both():
    from tts_diffusion.searchers import register_searcher
    from tts_diffusion.searchers.smc_spec import SMC
    from tts_diffusion.verifiers import register_verifier
    from tts_diffusion.verifiers.clip_spec import CLIP

    with pytest.raises(ValueError, match="not both"):
        register_searcher(SMC, "another description")
    with pytest.raises(ValueError, match="not both"):
        register_verifier(CLIP, params=CLIP.params.params)


# ------------------------------------------------------------------ generate's start-up
_GENERATE_PROBE = _RUN_CLI + textwrap.dedent("""
    from tts_diffusion._startup import is_deferred
    print(json.dumps({"code": code, "modules": sorted(sys.modules),
                      "deferred": [m for m in sys.modules if is_deferred(m)]}), file=sys.stderr)
""")

#: the diffusers model modules building the embedded PixArt model needs (autoencoder_kl's
#: Encoder/Decoder blocks import unet_2d_blocks, which imports two transformer modules)
NEEDED_MODEL_MODULES = {
    "diffusers.models.transformers.pixart_transformer_2d", "diffusers.models.transformers.transformer_2d",
    "diffusers.models.transformers.dual_transformer_2d", "diffusers.models.unets.unet_2d_blocks",
    "diffusers.models.autoencoders.autoencoder_kl", "diffusers.models.autoencoders.vae",
}


def test_generate_imports_only_the_models_it_runs(tmp_path):
    """`generate` with the embedded model: of diffusers' model modules only the PixArt
    transformer's and the VAE's load (not the 70-odd others the packages' __init__s import),
    and not open_clip (the oracle verifies), scipy.stats or ftfy; the image is written."""
    out = tmp_path / "x.png"
    args = ["generate", "two red circles", "--steps", "4", "--budget", "4", "--device", "cpu", "--threads", "1",
            "--quiet", "--out", str(out)]
    r = subprocess.run([sys.executable, "-c", _GENERATE_PROBE, json.dumps(args)], capture_output=True, text=True,
                       timeout=300)
    info = json.loads(r.stderr.strip().splitlines()[-1])
    assert info["code"] == 0 and out.exists(), r.stderr
    modules = set(info["modules"])
    models = {m for m in modules if m.startswith(("diffusers.models.transformers.", "diffusers.models.unets.",
                                                  "diffusers.models.autoencoders."))}
    assert models == NEEDED_MODEL_MODULES, sorted(models - NEEDED_MODEL_MODULES)
    assert not {m for m in modules if m.split(".")[0] in ("open_clip", "open_clip_torch")}
    assert "scipy.stats._stats_py" not in modules and "ftfy.fixes" not in modules and "botocore" not in modules
    assert {"diffusers.models.transformers", "diffusers.hooks", "scipy.stats", "ftfy"} <= set(info["deferred"])
    # nor torch._dynamo (and sympy, triton with it), transformers or peft (docs/startup.md)
    assert not {m for m in modules if m.split(".")[0] in ("transformers", "peft", "sympy", "triton", "torchvision")}
    assert "torch._dynamo" not in modules and "scipy.integrate._quadrature" not in modules


def test_a_deferred_package_loads_on_first_use():
    """A deferred package's __init__ runs when a name it lacks is asked for; its submodules
    import alone before that."""
    code = textwrap.dedent("""
        import sys
        from tts_diffusion._startup import defer_package_inits, is_deferred
        done = defer_package_inits()
        assert {"diffusers.models.transformers", "diffusers.models.unets", "scipy.stats"} <= set(done), done
        from diffusers.models.transformers.pixart_transformer_2d import PixArtTransformer2DModel
        assert is_deferred("diffusers.models.transformers")
        assert "diffusers.models.transformers.transformer_sd3" not in sys.modules
        import diffusers.models.transformers as t
        assert t.SD3Transformer2DModel.__name__ == "SD3Transformer2DModel" and not is_deferred(t.__name__)
        assert t.PixArtTransformer2DModel is PixArtTransformer2DModel
        import scipy.stats
        assert scipy.stats.norm.cdf(0.0) == 0.5 and not is_deferred("scipy.stats")
        from diffusers import UNet2DConditionModel, SD3Transformer2DModel
        assert defer_package_inits() == []  # all imported now: nothing is touched
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_direct_load_equals_diffusers_from_pretrained(dtype):
    """The embedded model loaded from its own classes (pipelines/direct_load.py) is the
    pipeline DiffusionPipeline.from_pretrained builds: same classes, configs, weights, and
    the same image from the same latents."""
    import torch
    from diffusers import DiffusionPipeline

    from tts_diffusion.paths import default_model_path
    from tts_diffusion.pipelines.direct_load import load_direct
    from tts_diffusion.pipelines.tts_pipeline import _dtype_kwarg, load_diffusers_pipeline

    folder = default_model_path()
    kw = {} if dtype is None else {_dtype_kwarg(): getattr(torch, dtype)}
    ours = load_direct(folder, _dtype_kwarg(), kw.get(_dtype_kwarg()))
    theirs = DiffusionPipeline.from_pretrained(str(folder), **kw)
    assert type(load_diffusers_pipeline(None, **kw)) is type(ours) is type(theirs)
    assert dict(ours.config) == dict(theirs.config)
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert type(a) is type(b), name
        if isinstance(a, torch.nn.Module):
            assert a.dtype == b.dtype and a.training == b.training, name
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
            assert a.config == b.config, name
    from tts_diffusion.shapes.model import pipe_call_kwargs

    images = [p("two red circles", **pipe_call_kwargs(p, num_inference_steps=3, output_type="pt",
                                                      generator=torch.Generator().manual_seed(0))).images
              for p in (ours, theirs)]
    assert torch.equal(images[0], images[1])


def test_unknown_classes_fall_back_to_from_pretrained(tmp_path):
    from tts_diffusion.pipelines.direct_load import components

    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    assert components(tmp_path) is None
    from tts_diffusion.paths import default_model_path

    assert set(components(default_model_path())) == {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"}


# ------------------------------------------------------- light runs (no torch._dynamo, no transformers)
_PLAIN_PROBE = textwrap.dedent("""
    import contextlib, tts_diffusion._startup as startup
    startup.defer_package_inits = lambda: []  # a plain run: every package imported as usual
    startup.light_loading = contextlib.nullcontext
""") + _GENERATE_PROBE


def _generate_in(folder, probe: str) -> tuple[set, bytes, dict]:
    folder.mkdir()
    out = folder / "x.png"
    args = ["generate", "two red circles", "--steps", "4", "--budget", "8", "--device", "cpu", "--threads", "1",
            "--quiet", "--out", str(out)]
    r = subprocess.run([sys.executable, "-c", probe, json.dumps(args)], capture_output=True, text=True, timeout=300)
    info = json.loads(r.stderr.strip().splitlines()[-1])
    assert info["code"] == 0 and out.exists(), r.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    for key in ("timings", "command_line"):
        sidecar.pop(key)
    return set(info["modules"]), out.read_bytes(), sidecar


def test_light_run_writes_what_a_plain_run_writes(tmp_path):
    """`generate` with the embedded model runs without torch._dynamo and transformers (the
    light T5 text side, stand-ins while diffusers imports) and writes the same image bytes and
    the same sidecar as a run that imports everything as usual."""
    light_modules, light_png, light_sidecar = _generate_in(tmp_path / "light", _GENERATE_PROBE)
    plain_modules, plain_png, plain_sidecar = _generate_in(tmp_path / "plain", _PLAIN_PROBE)
    assert "transformers" not in light_modules and "torch._dynamo" not in light_modules
    assert {"transformers", "torch._dynamo"} <= plain_modules  # the two runs really differ
    assert light_png == plain_png
    assert light_sidecar == plain_sidecar


@pytest.fixture(scope="module")
def text_side():
    """(transformers' tokenizer, the light one, every prompt of both grammars plus edge cases)."""
    from transformers import PreTrainedTokenizerFast

    from tts_diffusion.paths import default_model_path
    from tts_diffusion.shapes.text_encoder import WordTokenizer

    folder = default_model_path() / "tokenizer"
    assets = default_model_path().parent / "prompts"
    prompts = [p["prompt"] for name in ("shapes_eval.json", "shapes_eval_v2.json")
               for p in json.loads((assets / name).read_text())["prompts"]]
    prompts += ["", "Two RED circles!", "a red circle " * 8]  # empty (the negative prompt), cased, truncated
    return PreTrainedTokenizerFast.from_pretrained(str(folder)), WordTokenizer(folder), prompts


def test_word_tokenizer_is_pretrained_tokenizer_fast(text_side):
    """The light tokenizer's answers to the calls PixArt's encode_prompt makes equal
    PreTrainedTokenizerFast's for every prompt; other calls are handed to it."""
    import torch

    real, light, prompts = text_side
    calls = [dict(padding="max_length", max_length=16, truncation=True, add_special_tokens=True, return_tensors="pt"),
             dict(padding="max_length", max_length=16, truncation=True, return_attention_mask=True,
                  add_special_tokens=True, return_tensors="pt"),
             dict(padding="longest", return_tensors="pt")]
    for kw in calls:
        for text in [prompts, *prompts[::50], *prompts[-3:]]:
            a, b = real(text, **kw), light(text, **kw)
            assert set(a.keys()) == set(b.keys()) == {"input_ids", "attention_mask"}
            assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), (text, kw)
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    long = prompts[-1]
    assert light(long, padding="longest", return_tensors="pt").input_ids.shape[1] > 16  # the truncation check sees it
    offsets = dict(add_special_tokens=True, return_offsets_mapping=True)
    assert light("two red circles", **offsets) == real("two red circles", **offsets)  # handed over
    ids = light(prompts[:3], padding="longest", return_tensors="pt").input_ids
    assert light.batch_decode(ids) == real.batch_decode(ids)
    assert light.model_max_length == real.model_max_length == 16
    assert not any(hasattr(real, name) for name in light.ABSENT)  # answered without building the real one


@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16"])
def test_light_t5_encoder_is_transformers_t5(text_side, dtype):
    """shapes.text_encoder.T5Encoder loads the same weights as T5EncoderModel (names, dtypes, fp32
    `wo` under fp16) and its embeddings equal transformers' bit for bit: every prompt of both
    grammars padded to 16 (masked keys) and single prompts unpadded (no mask)."""
    import torch

    from tts_diffusion.paths import default_model_path
    from tts_diffusion.shapes.text_encoder import T5Encoder
    from transformers import T5EncoderModel

    real_tok, _, prompts = text_side
    folder = default_model_path() / "text_encoder"
    dt = None if dtype is None else getattr(torch, dtype)
    theirs = T5EncoderModel.from_pretrained(str(folder), dtype=dt, low_cpu_mem_usage=True)
    ours = T5Encoder.from_pretrained(folder, dt)
    sa, sb = theirs.state_dict(), ours.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert ours.dtype == theirs.dtype and ours.training == theirs.training is False
    batch = real_tok(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert not batch.attention_mask.all()
    with torch.no_grad():
        a = theirs(batch.input_ids, attention_mask=batch.attention_mask)[0]
        assert torch.equal(a, ours(batch.input_ids, attention_mask=batch.attention_mask)[0])
        for p in prompts[::100]:
            one = real_tok(p, padding="longest", return_tensors="pt")
            assert one.attention_mask.all()
            assert torch.equal(theirs(one.input_ids, attention_mask=one.attention_mask)[0],
                               ours(one.input_ids, attention_mask=one.attention_mask)[0])
        ours.encoder.block[3].layer[1].DenseReluDense.wo.weight[0, 0] += 1e-3  # guard: the check can fail
        assert not torch.equal(a, ours(batch.input_ids, attention_mask=batch.attention_mask)[0])


def test_light_imports_keep_what_diffusers_asks_of_dynamo_and_transformers():
    """After a light load, importing torch._dynamo later marks the classes diffusers asked it to
    allow in graphs, torch.compile'd modules are recognised, and the lazy classes diffusers holds
    for transformers' answer isinstance as the real ones, without importing anything before;
    diffusers' map of installed distributions is the real one, computed when first read."""
    code = textwrap.dedent("""
        import sys
        from tts_diffusion._startup import defer_package_inits
        from tts_diffusion.paths import default_model_path
        from tts_diffusion.pipelines.direct_load import load_direct
        defer_package_inits()
        pipe = load_direct(default_model_path(), "dtype", None, light=True)
        from tts_diffusion._startup import is_light
        assert not is_light()
        from diffusers.loaders import lora_base
        from diffusers.models.attention_processor import Attention
        from diffusers.pipelines import pipeline_loading_utils
        from diffusers.utils.torch_utils import is_compiled_module
        assert type(pipe.text_encoder).__name__ == "T5Encoder" and not is_compiled_module(pipe.vae)
        assert not isinstance(pipe.text_encoder, lora_base.PreTrainedModel)
        assert pipeline_loading_utils.TRANSFORMERS_SAFE_WEIGHTS_NAME == "model.safetensors"
        assert not {"torch._dynamo", "transformers", "peft"} & set(sys.modules), "imported"
        from diffusers.utils import import_utils  # its map of installed packages: computed when first read
        assert import_utils._package_map._data is None
        import importlib.metadata
        assert dict(import_utils._package_map) == importlib.metadata.packages_distributions()
        import torch, torch._dynamo
        from torch._dynamo import trace_rules
        assert id(Attention) in trace_rules._allowed_callable_ids, "allow_in_graph not replayed"
        assert is_compiled_module(torch.compile(pipe.vae))
        from transformers import PreTrainedModel, T5EncoderModel
        t5 = T5EncoderModel.from_pretrained(str(default_model_path() / "text_encoder"))
        assert isinstance(t5, lora_base.PreTrainedModel) and issubclass(T5EncoderModel, lora_base.PreTrainedModel)
        assert lora_base.PreTrainedModel.from_pretrained.__func__ is PreTrainedModel.from_pretrained.__func__
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
