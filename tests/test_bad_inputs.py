"""Bad and edge inputs, as users type them: every one gives exit code 2, exactly one
`error: ...` line on stderr, no traceback, no file left in the output folder, and (for the
inputs the CLI can judge alone) no model loaded; the Python API raises TTSInputError for
the same inputs before any denoiser call."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

from tts_diffusion import TTSPipeline
from tts_diffusion.cli import main
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.errors import TTSInputError
from tts_diffusion.pipelines import tts_pipeline
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.verifiers import register_verifier

register_verifier("brightness", "test-only: mean pixel value")(lambda **kw: BrightnessVerifier())

OK = ["--budget", "8", "--steps", "2", "--height", "32", "--width", "32", "--verifier", "brightness"]

# (id, extra CLI args replacing / extending OK, prompt, text the error line must contain)
# -- inputs the CLI refuses before it loads any model --------------------------------
BEFORE_LOAD = [
    # prompts
    ("empty-prompt", [], "", "prompt is empty"),
    ("blank-prompt", [], "   ", "prompt is empty"),
    ("tab-newline-prompt", [], "\t\n", "prompt is empty"),
    ("10k-prompt", [], "a red circle " * 800, "characters long"),
    ("nul-in-prompt", [], "a red\x00 circle", "control character"),
    ("escape-in-prompt", [], "a \x1b[31mred circle", "control character"),
    ("bell-in-prompt", [], "a red circle\x07", "control character"),
    ("control-negative", ["--negative-prompt", "blurry\x00"], "a red circle", "negative prompt contains"),
    # steps / size / batch
    ("steps-0", ["--steps", "0"], "a red circle", "--steps must be at least 1"),
    ("steps-negative", ["--steps", "-3"], "a red circle", "--steps must be at least 1"),
    ("steps-huge", ["--steps", "100000"], "a red circle", "--steps=100000 is too large"),
    ("steps-float", ["--steps", "2.5"], "a red circle", "not a valid integer"),
    ("height-0", ["--height", "0"], "a red circle", "--height must be at least 1"),
    ("width-0", ["--width", "0"], "a red circle", "--width must be at least 1"),
    ("height-negative", ["--height", "-64"], "a red circle", "--height must be at least 1"),
    ("max-batch-0", ["--max-batch", "0"], "a red circle", "--max-batch must be at least 1"),
    ("max-batch-negative", ["--max-batch", "-2"], "a red circle", "--max-batch must be at least 1"),
    # guidance
    ("guidance-inf", ["--guidance", "inf"], "a red circle", "finite number >= 0"),
    ("guidance-minus-inf", ["--guidance", "-inf"], "a red circle", "finite number >= 0"),
    ("guidance-nan", ["--guidance", "nan"], "a red circle", "finite number >= 0"),
    ("guidance-negative", ["--guidance", "-1"], "a red circle", "finite number >= 0"),
    ("guidance-word", ["--guidance", "high"], "a red circle", "not a valid float"),
    # seeds
    ("seed-negative", ["--seed", "-1"], "a red circle", "seed must be an integer in [0, 2**63 - 1]"),
    ("seed-2**63", ["--seed", str(2**63)], "a red circle", "seed must be an integer in [0, 2**63 - 1]"),
    ("seed-2**64", ["--seed", str(2**64)], "a red circle", "seed must be an integer in [0, 2**63 - 1]"),
    ("seed-word", ["--seed", "abc"], "a red circle", "not a valid integer"),
    # budgets
    ("budget-0", ["--budget", "0"], "a red circle", "--budget must be at least 1"),
    ("budget-negative", ["--budget", "-5"], "a red circle", "--budget must be at least 1"),
    ("budget-10**12", ["--budget", str(10**12), "--steps", "20"], "a red circle", "lower the budget"),
    ("budget-10**18", ["--budget", str(10**18), "--steps", "20"], "a red circle", "lower the budget"),
    ("budget-word", ["--budget", "lots"], "a red circle", "not a valid integer"),
    # devices and dtypes
    ("device-typo", ["--device", "cdua"], "a red circle", "is not a device name"),
    ("device-empty", ["--device", ""], "a red circle", "is not a device name"),
    ("device-gpu", ["--device", "gpu"], "a red circle", "is not a device name"),
    ("device-cuda-99", ["--device", "cuda:99"], "a red circle", "cuda"),
    ("device-meta", ["--device", "meta"], "a red circle", "is not supported"),
    ("float16-on-cpu", ["--device", "cpu", "--dtype", "float16"], "a red circle", "float16 is not supported on the cpu"),
    ("dtype-unknown", ["--dtype", "float8"], "a red circle", "Invalid value for '--dtype'"),
    # names and options
    ("unknown-searcher", ["--searcher", "nope"], "a red circle", "unknown searcher"),
    ("unknown-verifier", ["--verifier", "nope"], "a red circle", "unknown verifier"),
    ("option-without-equals", ["-o", "round_size"], "a red circle", "must look like KEY=VALUE"),
    ("unknown-flag", ["--bugdet", "8"], "a red circle", "No such option"),
    ("missing-prompt", None, None, "Missing argument"),
]
if not torch.cuda.is_available():
    BEFORE_LOAD.append(("cuda-without-gpu", ["--device", "cuda"], "a red circle", "no usable CUDA GPU"))
if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
    BEFORE_LOAD.append(("mps-unavailable", ["--device", "mps"], "a red circle", "is not available"))

# -- output paths (checked before loading too); value: (out relative to the folder, text) ---
BAD_OUT = [
    ("out-json", "data.json", "sidecar's extension"),
    ("out-no-extension", "best", "no file extension"),
    ("out-unknown-extension", "best.xyz", "cannot write .xyz"),
    ("out-text-extension", "best.txt", "cannot write .txt"),
    ("out-is-directory", "sub", "is a directory"),
    ("out-trailing-slash", "newdir/", "is a directory"),
    ("out-missing-parent", "no/such/folder/best.png", "does not exist"),
    ("out-parent-is-file", "afile.txt/best.png", "is a file, not a folder"),
    ("out-foreign-sidecar", "data.png", "not a tts-diffusion sidecar"),
    ("out-sidecar-is-directory", "clash.png", "not a tts-diffusion sidecar"),
    ("out-empty", "", "is empty"),
]

# -- inputs only the loaded model can judge (still before any denoiser call) ---------
AFTER_LOAD = [
    ("size-100000", ["--height", "100000", "--width", "100000"], "a red circle", "to decode one image"),
    ("size-not-multiple", ["--height", "36"], "a red circle", "not supported by this model"),
    ("budget-below-one-sample", ["--budget", "1"], "a red circle", "below one full sample"),
    ("budget-10**13-default-steps", ["--budget", str(10**13), "--steps", None], "a red circle", "lower the budget"),
    ("unknown-searcher-option", ["-o", "nope=1"], "a red circle", "nope"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-sd15")
    make_tiny_pipeline("sd15").save_pretrained(path)
    return path


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "outputs"
    d.mkdir()
    (d / "sub").mkdir()
    (d / "afile.txt").write_text("not a folder")
    (d / "data.json").write_text('{"rows": [1, 2, 3]}')  # an unrelated user file
    (d / "clash.json").mkdir()
    return d


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _args(extra):
    """OK with `extra`'s (flag, value) pairs replacing OK's flags (a None value drops the flag)."""
    out = list(OK)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in out and flag != "-o":
            i = out.index(flag)
            del out[i : i + 2]
        if value is not None:
            out += [flag, value]
    return out


def _cli(args, monkeypatch=None, *, forbid_load=False):
    if forbid_load:
        def no_load(*a, **k):
            raise AssertionError("the model was loaded before the input was checked")

        monkeypatch.setattr(tts_pipeline, "load_diffusers_pipeline", no_load)
    return CliRunner().invoke(main, args)


def _assert_one_error_line(r, message):
    assert r.exit_code == 2, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in r.output


@pytest.mark.parametrize("name,extra,prompt,message", BEFORE_LOAD, ids=[c[0] for c in BEFORE_LOAD])
def test_cli_refuses_before_loading(name, extra, prompt, message, out_dir, monkeypatch):
    before = _snapshot(out_dir)
    out = ["--out", str(out_dir / "best.png"), "--quiet"]
    args = ["generate", *out] if prompt is None else ["generate", prompt, *_args(extra), *out]
    r = _cli(args, monkeypatch, forbid_load=True)
    _assert_one_error_line(r, message)
    assert _snapshot(out_dir) == before


@pytest.mark.parametrize("name,out,message", BAD_OUT, ids=[c[0] for c in BAD_OUT])
def test_cli_refuses_bad_out_before_loading(name, out, message, out_dir, monkeypatch):
    before = _snapshot(out_dir)
    target = str(out_dir / out) + ("/" if out.endswith("/") else "") if out else ""
    r = _cli(["generate", "a red circle", *OK, "--out", target, "--quiet"], monkeypatch, forbid_load=True)
    _assert_one_error_line(r, message)
    assert _snapshot(out_dir) == before


@pytest.mark.parametrize("name,extra,prompt,message", AFTER_LOAD, ids=[c[0] for c in AFTER_LOAD])
def test_cli_refuses_before_sampling(name, extra, prompt, message, out_dir, model_dir, monkeypatch):
    def no_sampling(*a, **k):
        raise AssertionError("sampled before checking the input")

    monkeypatch.setattr(DenoisingProcess, "denoise", no_sampling)
    before = _snapshot(out_dir)
    args = ["generate", prompt, *_args(extra), "--model", str(model_dir), "--device", "cpu",
            "--out", str(out_dir / "best.png"), "--quiet"]
    r = _cli(args)
    _assert_one_error_line(r, message)
    assert _snapshot(out_dir) == before


def test_args_helper_replaces_and_drops_flags():
    assert _args(["--steps", "0"]) == [*OK[:2], *OK[4:], "--steps", "0"]
    assert "--steps" not in _args(["--steps", None])
    assert _args(["-o", "a=1"])[-2:] == ["-o", "a=1"]


# ------------------------------------------------------------------- Python API
@pytest.fixture(scope="module")
def tts():
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    return TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())


KW = dict(budget=4, num_inference_steps=2, height=32, width=32, progress=False)

API = [
    ("empty", "", {}, "prompt is empty"),
    ("blank", "  \n", {}, "prompt is empty"),
    ("not-a-string", 123, {}, "must be a string"),
    ("none-prompt", None, {}, "must be a string"),
    ("empty-list", [], {}, "prompt list is empty"),
    ("list-with-empty", ["a red circle", " "], {}, "prompt is empty"),
    ("10k", "x" * 10_000, {}, "characters long"),
    ("control", "a\x00cat", {}, "control character"),
    ("negative-control", "a red circle", {"negative_prompt": "\x1b"}, "negative prompt contains"),
    ("negative-not-str", "a red circle", {"negative_prompt": 3}, "negative prompt must be a string"),
    ("steps-0", "a red circle", {"num_inference_steps": 0}, "num_inference_steps must be at least 1"),
    ("steps-float", "a red circle", {"num_inference_steps": 2.5}, "must be a positive integer"),
    ("steps-bool", "a red circle", {"num_inference_steps": True}, "must be a positive integer"),
    ("steps-over-train", "a red circle", {"num_inference_steps": 1001}, "too large"),
    ("height-0", "a red circle", {"height": 0}, "height must be at least 1"),
    ("width-negative", "a red circle", {"width": -32}, "width must be at least 1"),
    ("height-huge", "a red circle", {"height": 100_000, "width": 100_000}, "to decode one image"),
    ("guidance-inf", "a red circle", {"guidance_scale": math.inf}, "finite number >= 0"),
    ("guidance-nan", "a red circle", {"guidance_scale": math.nan}, "finite number >= 0"),
    ("guidance-negative", "a red circle", {"guidance_scale": -2.0}, "finite number >= 0"),
    ("guidance-str", "a red circle", {"guidance_scale": "7"}, "must be a number"),
    ("seed-negative", "a red circle", {"seed": -1}, "seed must be an integer"),
    ("seed-2**63", "a red circle", {"seed": 2**63}, "seed must be an integer"),
    ("seed-float", "a red circle", {"seed": 1.5}, "seed must be an integer"),
    ("generator-list-wrong-length", "a red circle", {"generator": [torch.Generator(), torch.Generator()]},
     "generator is a list of 2 but there are 1 prompt"),
    ("generator-not-generator", "a red circle", {"generator": 42}, "must be a torch.Generator"),
    ("max-batch-0", "a red circle", {"max_batch": 0}, "max_batch must be at least 1"),
    ("budget-0", "a red circle", {"budget": 0}, "budget must be at least 1"),
    ("budget-float", "a red circle", {"budget": 8.5}, "budget must be a positive integer"),
    ("budget-below-sample", "a red circle", {"budget": 1}, "below one full sample"),
    ("budget-10**15", "a red circle", {"budget": 10**15}, "lower the budget"),
    ("output-type", "a red circle", {"output_type": "latent"}, "output_type 'latent' is not supported"),
    ("num-images-0", "a red circle", {"num_images_per_prompt": 0}, "num_images_per_prompt must be at least 1"),
    ("num-images-over-budget", "a red circle", {"num_images_per_prompt": 3}, "num_images_per_prompt=3 needs"),
    ("callback-not-callable", "a red circle", {"callback_on_step_end": "print"}, "must be callable"),
    ("verifier-options-list", "a red circle", {"verifier_options": ["a=1"]}, "verifier_options must be a dict"),
    ("unknown-searcher", "a red circle", {"searcher": "nope"}, "unknown searcher"),
    ("unknown-verifier", "a red circle", {"verifier": "nope"}, "unknown verifier"),
]


@pytest.mark.parametrize("name,prompt,kwargs,message", API, ids=[c[0] for c in API])
def test_python_api_refuses_before_sampling(name, prompt, kwargs, message, tts, monkeypatch):
    def no_sampling(*a, **k):
        raise AssertionError("sampled before checking the input")

    monkeypatch.setattr(DenoisingProcess, "denoise", no_sampling)
    with pytest.raises(TTSInputError, match=None) as info:
        tts(prompt, **{**KW, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_and_python_give_the_same_message(tts, out_dir, monkeypatch):
    """The CLI's error line is the Python API's message for the same input."""
    for prompt in ["", "x" * 10_000, "a\x00cat"]:
        with pytest.raises(TTSInputError) as info:
            tts(prompt, **KW)
        r = _cli(["generate", prompt, *OK, "--out", str(out_dir / "b.png")], monkeypatch, forbid_load=True)
        assert r.stderr.strip() == f"error: {info.value}"


def test_our_own_sidecar_is_replaced_a_foreign_one_is_not(tmp_path, model_dir):
    """Rerunning into the same --out replaces the image and the sidecar it wrote; an
    unrelated JSON file of the same name stops the run before it starts."""
    out = tmp_path / "best.png"
    args = ["generate", "a red circle", *OK, "--model", str(model_dir), "--device", "cpu", "--out", str(out), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    first = json.loads(out.with_suffix(".json").read_text())
    r = CliRunner().invoke(main, [*args[:-3], "--seed", "5", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["seed"] == 5 != first["settings"]["seed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.png"]  # no temporary files left
    other = tmp_path / "other.png"
    (tmp_path / "other.json").write_text("[1, 2]")
    r = CliRunner().invoke(main, [*args[:-3], "--out", str(other), "--quiet"])
    assert r.exit_code == 2 and "not a tts-diffusion sidecar" in r.stderr
    assert (tmp_path / "other.json").read_text() == "[1, 2]" and not other.exists()


# ------------------------------------------------ options parsed by declared specs
@pytest.fixture
def spec_components():
    """A searcher and a verifier registered with parameter specs for the test only."""
    from tts_diffusion.params import Param
    from tts_diffusion.searchers import registry as sbase
    from tts_diffusion.searchers.best_of_n import best_of_n
    from tts_diffusion.verifiers import registry as vbase

    @sbase.register_searcher("spec_test", "test-only", params=[
        Param("num_samples", int, None, "candidates", low=1),
        Param("reward_scale", float, 1.0, "lambda", low=0.0)])
    def spec_test(proc, verifier, prompt, budget, generator, *, negative_prompt, num_samples, reward_scale,
                  keep_images):
        return best_of_n(proc, verifier, prompt, budget, generator, negative_prompt=negative_prompt)

    vbase.register_verifier("spec_brightness", "test-only", params=[
        Param("chunk_size", int, 64, "rows per pass", low=1)])(lambda chunk_size=64: BrightnessVerifier(chunk_size))
    yield
    sbase._REGISTRY.pop("spec_test")
    vbase._REGISTRY.pop("spec_brightness")


SPEC_ROWS = [
    (["-o", "num_samples=abc"], "searcher 'spec_test' option num_samples='abc' is not valid: expected an integer >= 1"),
    (["-o", "num_samples=1.7"], "num_samples='1.7' is not valid"),
    (["-o", "num_samples=true"], "num_samples='true' is not valid"),
    (["-o", "num_samples=0"], "num_samples=0 is not valid"),
    (["-o", "reward_scale=NaN"], "reward_scale=nan is not valid"),
    (["-o", "reward_scale=-1"], "reward_scale=-1.0 is not valid"),
    (["-o", "window=5"], "has no option 'window'; valid: num_samples, reward_scale"),
    (["--verifier-option", "chunk_size=0"], "verifier 'spec_brightness' option chunk_size=0 is not valid"),
    (["--verifier-option", "nope=1"], "has no option 'nope'; valid: chunk_size"),
]


@pytest.mark.parametrize("extra,message", SPEC_ROWS, ids=[r[0][1] for r in SPEC_ROWS])
def test_cli_options_parsed_by_spec_before_loading(extra, message, spec_components, out_dir, monkeypatch):
    before = _snapshot(out_dir)
    args = ["generate", "a red circle", *_args(["--verifier", "spec_brightness"]), "--searcher", "spec_test", *extra,
            "--out", str(out_dir / "best.png"), "--quiet"]
    r = _cli(args, monkeypatch, forbid_load=True)
    _assert_one_error_line(r, message)
    assert _snapshot(out_dir) == before


def test_cli_spec_options_reach_the_search(spec_components, model_dir, tmp_path):
    out = tmp_path / "b.png"
    r = CliRunner().invoke(main, ["generate", "a red circle", *_args(["--verifier", "spec_brightness"]), "--searcher",
                                  "spec_test", "-o", "num_samples=2", "--verifier-option", "chunk_size=3",
                                  "--model", str(model_dir), "--device", "cpu", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text())["nfe"] == 8


def test_python_searcher_kwargs_checked_by_spec(spec_components, tts, monkeypatch):
    monkeypatch.setattr(DenoisingProcess, "denoise", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(TTSInputError, match="num_samples=0 is not valid"):
        tts("a red circle", searcher="spec_test", num_samples=0, **KW)
    with pytest.raises(TTSInputError, match="has no option 'nope'"):
        tts("a red circle", searcher="spec_test", nope=1, **KW)


def test_bare_command_prints_help_and_usage_errors_are_one_line():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 0 and "Usage:" in r.output and "generate" in r.output
    r = CliRunner().invoke(main, ["nope"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: No such command 'nope'."
