"""The `tts-diffusion` command line.

    tts-diffusion generate "two red circles" --budget 160 --out best.png
    tts-diffusion replay best.json --out again.png
    tts-diffusion list

Bad input prints one line, `error: ...`, and exits with code 2. Only click is imported at
start-up: torch, diffusers and transformers load inside the commands that need them, so
`--help` and `--version` answer at once.
"""
from __future__ import annotations

import json
import os
import sys

import click

from . import __version__

EXIT_BAD_INPUT = 2


def default_threads() -> int:
    """CPU threads for torch when --threads is not given: half the cores this process may
    run on, at most 4, at least 1. torch's own default (every physical core) collapses when
    another process is busy (160 NFE on 2 shared cores: 16.6 s against 2.0 s with 1 thread)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // 2))


def _set_threads(threads: int | None, device: str) -> None:
    """torch.set_num_threads: --threads if given, else `default_threads()` on the CPU."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    elif not device.startswith("cuda"):
        torch.set_num_threads(default_threads())


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


class _Group(click.Group):
    """The command group; remembers the arguments it was run with, which sidecars record."""

    invoked_with: list[str] | None = None

    def main(self, args=None, *rest, **kwargs):  # type: ignore[override]
        self.invoked_with = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)


def _command_line() -> list[str]:
    """The command as typed: `tts-diffusion` and its arguments."""
    return ["tts-diffusion", *(main.invoked_with if main.invoked_with is not None else sys.argv[1:])]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="tts-diffusion")
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
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch (default on CPU: half the available cores, 1 to 4)")
def generate(prompt, model, searcher, verifier, budget, seed, steps, guidance, height, width, negative_prompt, device,
             dtype, max_batch, options, verifier_options, out, quiet, threads) -> None:
    """Search for the best image for PROMPT and write it to --out.

    With the embedded model PROMPT may be plain ("two red circles", "2 red circles",
    "a star to the left of a square"); it is mapped to the canonical prompt the model was
    trained on, which the JSON sidecar records."""
    if not prompt.strip():
        _fail("the prompt is empty: pass a non-empty text prompt")
    if budget is not None and budget < 1:
        _fail(f"--budget must be a positive number of NFE, got {budget}")
    if max_batch < 1:
        _fail(f"--max-batch must be at least 1, got {max_batch}")
    if threads is not None and threads < 1:
        _fail(f"--threads must be at least 1, got {threads}")
    from .errors import TTSInputError

    if model is None:  # the embedded shapes world: check the prompt before loading anything heavy
        from .shapes.phrasing import canonical_prompt

        try:
            canonical_prompt(prompt)
        except TTSInputError as e:
            _fail(str(e))
    import torch

    from .searchers import available_searchers
    from .verifiers import available_verifiers

    if searcher not in available_searchers():
        _fail(f"unknown searcher {searcher!r}; available: {', '.join(available_searchers())}")
    if verifier is not None and verifier not in available_verifiers():
        _fail(f"unknown verifier {verifier!r}; available: {', '.join(available_verifiers())}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    _set_threads(threads, device)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        torch_dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if verifier is None:
        verifier = "oracle" if model is None else "clip"
    hyper = _parse_options(options, "searcher")
    vopts = _parse_options(verifier_options, "verifier")

    from .pipelines import TTSPipeline

    _quiet_libraries()
    try:
        tts = TTSPipeline.from_pretrained(model, torch_dtype=torch_dtype)
        tts.set_progress_bar_config(disable=True)
        tts.to(device)
        result = tts(prompt, searcher=searcher, verifier=verifier, budget=budget, seed=seed, num_inference_steps=steps,
                     guidance_scale=guidance, height=height, width=width, negative_prompt=negative_prompt,
                     max_batch=max_batch, progress=not quiet, verifier_options=vopts, **hyper)
    except TTSInputError as e:
        _fail(str(e))
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            _fail(f"searcher {searcher!r} does not take that option: {e}")
        raise
    image_path, sidecar = result.save(out, command_line=_command_line())
    click.echo(f"best score {result.best_score:.4f} after {result.nfe} NFE "
               f"({len(result.candidates)} candidates, {result.timings.get('total', 0):.1f} s)")
    click.echo(f"wrote {image_path} and {sidecar}")


@main.command()
@click.argument("sidecar", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="image path (default: SIDECAR's image name with a '-replay' suffix); a new sidecar is written next to it")
@click.option("--device", default=None, help="default: the device recorded in SIDECAR (cpu if it is not available)")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch (default on CPU: half the available cores, 1 to 4)")
@click.option("--allow-other-weights", is_flag=True,
              help="run even if the model's weights differ from the recorded sha256 (the image will differ)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def replay(sidecar, out, device, threads, allow_other_weights, quiet) -> None:
    """Rerun the search recorded in SIDECAR (the JSON written next to an image) and write
    the image again: same model, searcher, verifier, settings and seed. On the same device
    and versions the pixels are identical."""
    from .core.result import SIDECAR_VERSION
    from .errors import TTSInputError

    if threads is not None and threads < 1:
        _fail(f"--threads must be at least 1, got {threads}")
    try:
        from pathlib import Path

        record = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except OSError as e:
        _fail(f"cannot read {sidecar}: {e.strerror or e}")
    except json.JSONDecodeError as e:
        _fail(f"{sidecar} is not JSON ({e.msg} at line {e.lineno}); pass the .json written next to an image")
    run = record.get("run") if isinstance(record, dict) else None
    if not isinstance(run, dict):
        _fail(f"{sidecar} has no 'run' section: it was not written by `tts-diffusion generate` "
              f"(sidecar_version {SIDECAR_VERSION} or later)")
    if record.get("sidecar_version") != SIDECAR_VERSION:
        _fail(f"{sidecar} has sidecar_version {record.get('sidecar_version')!r}; this tts-diffusion reads {SIDECAR_VERSION}")
    if not isinstance(run.get("searcher"), str) or not isinstance(run.get("verifier"), str):
        _fail(f"{sidecar} records a searcher or verifier passed as a Python object, which cannot be rebuilt from JSON")
    if run.get("seed") is None:
        _fail(f"{sidecar} records no seed (the search was run with a torch.Generator), so its noise cannot be replayed")

    from .core.provenance import describe_weights, versions
    from .paths import default_model_path

    recorded = record.get("model") or {}
    source = recorded.get("source")
    now = describe_weights(source if source is not None else default_model_path())
    if recorded.get("sha256") and now.get("sha256") != recorded["sha256"]:
        msg = (f"the model {source or '(embedded default)'} has weights sha256 {str(now.get('sha256'))[:12]}..., "
               f"the sidecar was made with {recorded['sha256'][:12]}...")
        if not allow_other_weights:
            _fail(msg + "; pass --allow-other-weights to run anyway (the image will differ)")
        click.echo(f"warning: {msg}; the image will differ", err=True)
    for name, v in (record.get("versions") or {}).items():
        have = versions().get(name)
        if v != have:
            click.echo(f"warning: the sidecar used {name} {v}, this is {have}; pixels may differ", err=True)

    import torch

    if device is None:
        device = run.get("device") or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            click.echo(f"warning: the sidecar ran on {device}, which is not available here; replaying on cpu "
                       "(pixels may differ)", err=True)
            device = "cpu"
    _set_threads(threads, device)
    torch_dtype = getattr(torch, str(run.get("dtype") or "float32"))
    if out is None:
        out = os.path.splitext(sidecar)[0] + "-replay.png"
    from .pipelines import TTSPipeline

    _quiet_libraries()
    try:
        tts = TTSPipeline.from_pretrained(source, torch_dtype=torch_dtype)
        tts.set_progress_bar_config(disable=True)
        tts.to(device)
        result = tts(run["prompt"], searcher=run["searcher"], verifier=run.get("verifier"), budget=run["budget"],
                     seed=run["seed"], num_inference_steps=run.get("num_inference_steps"),
                     guidance_scale=run.get("guidance_scale"), height=run.get("height"), width=run.get("width"),
                     negative_prompt=run.get("negative_prompt"), max_batch=run.get("max_batch", 16),
                     progress=not quiet, verifier_options=run.get("verifier_options") or {},
                     process_options=run.get("process_options") or None, **(run.get("searcher_options") or {}))
    except TTSInputError as e:
        _fail(str(e))
    image_path, new_sidecar = result.save(out, command_line=_command_line())
    click.echo(f"best score {result.best_score:.4f} after {result.nfe} NFE (recorded: "
               f"{(record.get('best') or {}).get('score')})")
    click.echo(f"wrote {image_path} and {new_sidecar}")


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
