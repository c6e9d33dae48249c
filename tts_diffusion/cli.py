"""The `tts-diffusion` command line.

    tts-diffusion generate "a photo of two red circles" --budget 160 --out best.png
    tts-diffusion list

Bad input prints one line, `error: ...`, and exits with code 2.
"""
from __future__ import annotations

import json
import sys

import click

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _parse_options(pairs: tuple[str, ...], what: str) -> dict:
    """KEY=VALUE pairs; values parsed as JSON where they parse (numbers, true/false), else strings."""
    out = {}
    for p in pairs:
        if "=" not in p:
            _fail(f"{what} option {p!r} must look like KEY=VALUE")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _quiet_libraries() -> None:
    """Keep diffusers/transformers loading bars and warnings off the terminal."""
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tts-diffusion")
def main() -> None:
    """Test-time scaling for diffusion and flow text-to-image models."""


@main.command()
@click.argument("prompt")
@click.option("--model", default=None, help="diffusers folder or hub id (default: the embedded shapes model)")
@click.option("--searcher", default="best_of_n", show_default=True, help="search method (see `tts-diffusion list`)")
@click.option("--verifier", default=None, help="verifier name (default: oracle for the shapes model, else clip)")
@click.option("--budget", type=int, default=None,
              help="NFE budget (one sample costs --steps); default: the searcher's (see `list`), else 4 samples")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None,
              help="denoising steps per sample (default: the searcher's (see `list`), else the model's)")
@click.option("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
@click.option("--height", type=int, default=None)
@click.option("--width", type=int, default=None)
@click.option("--negative-prompt", default=None)
@click.option("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True,
              help="auto: float16 on cuda, float32 on cpu")
@click.option("--max-batch", type=int, default=16, show_default=True, help="rows per denoiser call (memory)")
@click.option("--option", "-o", "options", multiple=True, help="searcher hyper-parameter KEY=VALUE (repeatable)")
@click.option("--verifier-option", "verifier_options", multiple=True, help="verifier option KEY=VALUE (repeatable)")
@click.option("--out", type=click.Path(dir_okay=False), default="tts_out.png", show_default=True,
              help="image path; a JSON sidecar with scores, trace, settings and timings is written next to it")
@click.option("--tgate", "tgate_step", type=int, default=None, metavar="GATE_STEP",
              help="T-GATE: from step GATE_STEP on, drop CFG and reuse cached cross-attention (faster;"
                   " >= --steps: never gate; not for MM-DiT models)")
@click.option("--tgate-option", "tgate_options", multiple=True, metavar="KEY=VALUE",
              help="T-GATE setting (repeatable): sp_interval (5), fi_interval (1), warm_up (2)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def generate(prompt, model, searcher, verifier, budget, seed, steps, guidance, height, width, negative_prompt, device,
             dtype, max_batch, options, verifier_options, tgate_step, tgate_options, out, quiet) -> None:
    """Search for the best image for PROMPT and write it to --out."""
    if not prompt.strip():
        _fail("the prompt is empty: pass a non-empty text prompt")
    if budget is not None and budget < 1:
        _fail(f"--budget must be a positive number of NFE, got {budget}")
    if max_batch < 1:
        _fail(f"--max-batch must be at least 1, got {max_batch}")
    import torch

    from .errors import TTSInputError
    from .searchers import available_searchers
    from .verifiers import available_verifiers

    if searcher not in available_searchers():
        _fail(f"unknown searcher {searcher!r}; available: {', '.join(available_searchers())}")
    if verifier is not None and verifier not in available_verifiers():
        _fail(f"unknown verifier {verifier!r}; available: {', '.join(available_verifiers())}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        torch_dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if verifier is None:
        verifier = "oracle" if model is None else "clip"
    hyper = _parse_options(options, "searcher")
    vopts = _parse_options(verifier_options, "verifier")
    from .core.tgate import TGate

    try:
        tgate = TGate.from_cli(tgate_step, tgate_options)
    except TTSInputError as e:
        _fail(str(e))

    from .pipelines import TTSPipeline

    _quiet_libraries()
    try:
        tts = TTSPipeline.from_pretrained(model, torch_dtype=torch_dtype)
        tts.set_progress_bar_config(disable=True)
        tts.to(device)
        result = tts(prompt, searcher=searcher, verifier=verifier, budget=budget, seed=seed, num_inference_steps=steps,
                     guidance_scale=guidance, height=height, width=width, negative_prompt=negative_prompt,
                     max_batch=max_batch, progress=not quiet, verifier_options=vopts, tgate=tgate, **hyper)
    except TTSInputError as e:
        _fail(str(e))
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            _fail(f"searcher {searcher!r} does not take that option: {e}")
        raise
    image_path, sidecar = result.save(out)
    click.echo(f"best score {result.best_score:.4f} after {result.nfe} NFE "
               f"({len(result.candidates)} candidates, {result.timings.get('total', 0):.1f} s)")
    click.echo(f"wrote {image_path} and {sidecar}")


@main.command(name="list")
def list_() -> None:
    """List the available searchers, verifiers and models."""
    from .paths import default_model_path
    from .searchers import available_searchers, run_defaults
    from .verifiers import available_verifiers

    click.echo("searchers:")
    for k, d in available_searchers().items():
        rd = run_defaults(k)
        extra = f" [defaults: {rd['num_inference_steps']} steps, {rd['budget']} NFE]" if rd else ""
        click.echo(f"  {k:<12} {d}{extra}")
    click.echo("verifiers:")
    for k, d in available_verifiers().items():
        click.echo(f"  {k:<12} {d}")
    click.echo("models:")
    default = default_model_path()
    state = "" if (default / "model_index.json").exists() else "  (missing)"
    click.echo(f"  {'(default)':<12} embedded shapes model at {default}{state}")
    click.echo("  any diffusers folder or hub id of: Stable Diffusion 1.x/2.x, SDXL, PixArt-Sigma, SD3, FLUX")


if __name__ == "__main__":  # pragma: no cover
    main()
