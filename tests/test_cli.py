"""The `tts-diffusion` CLI: generate writes an image and a JSON sidecar; bad input gets one
line on stderr and exit code 2, never a traceback."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tts_diffusion.cli import main
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.verifiers import register_verifier

register_verifier("brightness", "test-only: mean pixel value")(lambda **kw: BrightnessVerifier())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-sd15")
    make_tiny_pipeline("sd15").save_pretrained(path)
    return path


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_generate_writes_image_and_sidecar(model_dir, tmp_path):
    out = tmp_path / "img.png"
    r = run("generate", "a red circle", "--model", str(model_dir), "--verifier", "brightness", "--budget", "8",
            "--steps", "2", "--guidance", "3", "--height", "32", "--width", "32", "--seed", "3", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.exists()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["nfe"] == 8 and len(side["candidates"]) == 4 and side["settings"]["seed"] == 3
    assert side["settings"]["verifier"] == "brightness" and side["trace"][-1]["best_score"] == side["best"]["score"]
    assert "NFE" in r.stderr  # progress bar
    # same seed, same result
    out2 = tmp_path / "img2.png"
    run("generate", "a red circle", "--model", str(model_dir), "--verifier", "brightness", "--budget", "8",
        "--steps", "2", "--guidance", "3", "--height", "32", "--width", "32", "--seed", "3", "--out", str(out2), "--quiet")
    assert json.loads(out2.with_suffix(".json").read_text())["best"] == side["best"]


def test_list():
    r = run("list")
    assert r.exit_code == 0
    assert "best_of_n" in r.output and "clip" in r.output and "models:" in r.output


@pytest.mark.parametrize("args,message", [
    (["", "--budget", "8"], "prompt is empty"),
    (["a cat", "--budget", "1", "--steps", "2"], "below one full sample"),
    (["a cat", "--searcher", "nope"], "unknown searcher"),
    (["a cat", "--verifier", "nope"], "unknown verifier"),
    (["a cat", "--model", "/no/such/folder"], "does not exist"),
    (["a cat", "--model", "someone/not-cached-model"], "could not load model"),
    (["a cat", "--budget", "8", "--steps", "2", "--height", "36", "--width", "32"], "not supported by this model"),
    (["a cat", "--budget", "8", "--steps", "2", "-o", "nope=1"], "searcher 'best_of_n' has no option 'nope'"),
])
def test_bad_input_one_line_exit_2(model_dir, tmp_path, args, message):
    if "--model" not in args:
        args = args + ["--model", str(model_dir), "--verifier", "brightness"] if "--verifier" not in args else args + ["--model", str(model_dir)]
    out = tmp_path / "x.png"
    r = CliRunner().invoke(main, ["generate", *args, "--out", str(out), "--quiet"])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.output and not out.exists()


def test_console_script_exit_code():
    r = subprocess.run([sys.executable, "-m", "tts_diffusion.cli", "generate", "   "], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == "error: the prompt is empty: pass a non-empty text prompt"


def test_generate_with_the_embedded_default_model(tmp_path):
    """No --model: the embedded shapes model with the exact oracle as verifier."""
    out = tmp_path / "best.png"
    r = run("generate", "a photo of a red circle", "--budget", "40", "--seed", "1", "--device", "cpu", "--out", str(out),
            "--quiet")
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["settings"]["verifier"] == "oracle" and side["settings"]["num_steps"] == 20
    assert side["settings"]["height"] == 64 and len(side["candidates"]) == 2
    assert side["best"]["score"] == 1.0  # a red circle is all but always right (96/96 seeds)
    from PIL import Image

    assert Image.open(out).size == (64, 64)


def test_default_model_clip_is_the_domain_clip():
    from tts_diffusion import TTSPipeline
    from tts_diffusion.paths import domain_clip_path

    tts = TTSPipeline.from_pretrained()
    ver = tts.get_verifier("clip")
    assert tts.is_default_model and ver.name == "clip"
    assert str(domain_clip_path()) in ver.source


def test_prompt_outside_the_oracle_grammar_fails_before_sampling(tmp_path, monkeypatch):
    from tts_diffusion.core.process import DenoisingProcess

    def no_sampling(*a, **k):
        raise AssertionError("sampled before checking the prompt")

    monkeypatch.setattr(DenoisingProcess, "denoise", no_sampling)
    r = CliRunner().invoke(main, ["generate", "a photo of a purple dragon", "--budget", "400", "--device", "cpu",
                                  "--out", str(tmp_path / "x.png"), "--quiet"])
    assert r.exit_code == 2 and "outside the shapes grammar" in r.stderr, (r.stderr, r.exception)
    assert len(r.stderr.strip().splitlines()) == 1
