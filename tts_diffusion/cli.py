"""The `tts-diffusion` command line.

    tts-diffusion generate "two red circles" --budget 160 --out best.png
    tts-diffusion generate "two red circles" "a blue star" --prompts more.txt --out-dir runs/   (model loaded once)
    tts-diffusion replay best.json --out again.png
    tts-diffusion list [--searcher NAME [--steps N] [-o KEY=VALUE]] [--verifier NAME]
    tts-diffusion bench --methods best_of_n,smc --budgets 1,4,16 --num-prompts 36 --out runs/sweep.jsonl
    accelerate launch --multi_gpu --num_processes 4 -m tts_diffusion.cli bench ...   (prompts over 4 GPUs)

Bad input prints one line, `error: ...`, and exits with code 2, before any model work.
Ctrl-C during a search writes the best image found so far and exits with code 130. Only
click is imported at start-up: torch, diffusers and transformers load inside the commands
that need them, so `--help` and `--version` answer at once.
"""
from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .threads import default_threads

EXIT_BAD_INPUT = 2
#: Ctrl-C: the best image found so far is written (sidecar marked "interrupted")
EXIT_INTERRUPTED = 130
#: the search ran but its best image is not a picture (non-finite or one flat colour): nothing written
EXIT_BAD_OUTPUT = 1
#: the signals a search stops on, writing its best so far; exit code 128 + the number
#: (SIGINT 130, SIGHUP 129, SIGTERM 143); a second one ends the process at once
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_STOPPED: dict = {"signal": None}
COMPILE_HELP = ("run the denoiser and VAE decoder under torch.compile (compiled once per batch shape: the first"
                " search pays tens of seconds at SD size, later ones run faster)")


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


def _quiet_libraries() -> None:
    """Keep diffusers/transformers loading bars and warnings off the terminal (transformers
    when it is imported: the embedded model runs without it, docs/startup.md)."""
    import warnings

    import diffusers

    from ._startup import after_import

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    after_import("transformers", _quiet_transformers)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _quiet_transformers(transformers) -> None:
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


class _OneLineErrors(click.Group):
    """Usage errors (a non-integer --seed, an unknown flag, ...) as one `error: ...` line
    with exit code 2, like every other bad input; Ctrl-C outside a search exits 130.
    Remembers the arguments it was run with, which sidecars record."""

    invoked_with: list[str] | None = None

    def main(self, args=None, *rest, **kwargs):  # type: ignore[override]
        kwargs.pop("standalone_mode", None)
        self.invoked_with = list(sys.argv[1:] if args is None else args)
        try:
            return super().main(args, *rest, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # bare `tts-diffusion`: help
                click.echo(e.ctx.get_help())
                sys.exit(0)
            _fail(" ".join(e.format_message().split()))
        except click.exceptions.Abort:
            name = _STOPPED["signal"] or "SIGINT"
            click.echo(f"interrupted ({name})", err=True)
            sys.exit(_exit_code(name))
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)


def _exit_code(name: str | None) -> int:
    import signal

    return 128 + int(getattr(signal, name or "SIGINT", signal.SIGINT))


def _on_stop_signal(signum, frame) -> None:
    """SIGINT / SIGTERM / SIGHUP: the first one stops the search (KeyboardInterrupt: the best
    so far is written); a second one ends the process at once, removing its temporaries."""
    import signal

    name = signal.Signals(signum).name
    if _STOPPED["signal"] is not None:
        from .records.files import remove_temporaries

        remove_temporaries()
        os.write(2, f"\nsecond signal ({name}): exiting now, nothing more written\n".encode())
        os._exit(_exit_code(_STOPPED["signal"]))
    _STOPPED["signal"] = name
    raise KeyboardInterrupt


def _catch_stop_signals() -> None:
    """Route the stop signals through `_on_stop_signal` (main thread only; elsewhere, as
    under a test runner's thread, Python's defaults stay)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    _STOPPED["signal"] = None
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _on_stop_signal)


def _command_line() -> list[str]:
    """The command as typed: `tts-diffusion` and its arguments."""
    return ["tts-diffusion", *(main.invoked_with if main.invoked_with is not None else sys.argv[1:])]


def _reward_guidance_options(f):
    """--reward-guidance and --reward-guidance-option, the same for `generate` and `bench`."""
    f = click.option("--reward-guidance-option", "reward_guidance_options", multiple=True, metavar="KEY=VALUE",
                     help="reward guidance setting (repeatable): preset (tfg|dps|freedom|ugd|mpgd|lgd), rho, mu,"
                          " iterations, gamma, samples, n_recur, rho_schedule, mu_schedule, gamma_schedule")(f)
    return click.option("--reward-guidance", "reward_guidance", default=None, metavar="VERIFIER",
                        help="TFG reward guidance of every step by a differentiable verifier"
                             " (clip, image_reward, aesthetic)")(f)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="tts-diffusion")
def main() -> None:
    """Test-time scaling for diffusion and flow text-to-image models.

    Exit codes: 0 done, 2 bad input (one `error:` line on stderr), 130 / 143 / 129
    interrupted by SIGINT (Ctrl-C) / SIGTERM / SIGHUP (the best image so far is written)."""


@main.command()
@click.argument("prompts", nargs=-1, metavar="[PROMPT]...")
@click.option("--prompts", "prompts_file", default=None, metavar="FILE",
              help="more prompts: a text file (one a line; blank and # lines skipped) or JSON Lines (one object a"
                   " line: \"prompt\" and any of seed, budget, steps, guidance, negative_prompt, height, width,"
                   " searcher, options [\"KEY=VALUE\", ...]); several prompts go to --out-dir")
@click.option("--out-dir", default=None, metavar="DIR",
              help="with several prompts or --prompts (default tts_out): prompt k goes to DIR/<k>-<slug>.png with its"
                   " .json sidecar (001-two-red-circles.png); DIR is created; prompts whose sidecar is there are"
                   " skipped")
@click.option("--redo", is_flag=True, help="with --out-dir: run again the prompts whose sidecar exists")
@click.option("--model", default=None, help="diffusers folder or hub id (default: the embedded shapes model)")
@click.option("--searcher", default="best_of_n", show_default=True, help="search method (see `tts-diffusion list`)")
@click.option("--verifier", default=None, help="verifier name (default: oracle for the shapes model, else clip)")
@click.option("--budget", type=int, default=None,
              help="NFE budget (one sample costs --steps); default: the searcher's (see `list`), else 4 samples")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed, 0 <= seed < 2**63")
@click.option("--steps", type=int, default=None,
              help="denoising steps per sample, >= 1 (default: the searcher's (see `list`), else the model's)")
@click.option("--guidance", type=float, default=None, help="guidance scale, finite, in [0, 100] (default: the model's)")
@click.option("--height", type=int, default=None, help="image height in pixels (default: the model's)")
@click.option("--width", type=int, default=None, help="image width in pixels (default: the model's)")
@click.option("--negative-prompt", default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True,
              help="auto: float16 on cuda, float32 on cpu (float16 on cpu is refused)")
@click.option("--max-batch", type=int, default=16, show_default=True, help="rows per denoiser call (memory), >= 1")
@click.option("--option", "-o", "options", multiple=True, help="searcher hyper-parameter KEY=VALUE (repeatable)")
@click.option("--verifier-option", "verifier_options", multiple=True, help="verifier option KEY=VALUE (repeatable)")
@click.option("--out", default=None,
              help="one prompt: image path (default tts_out.png; .png, .jpg, .webp, ...; its folder must exist). A"
                   " JSON sidecar with scores, trace, settings and timings is written next to it (best.png ->"
                   " best.json); an existing image is replaced, an existing .json only if it is a tts-diffusion"
                   " sidecar")
@click.option("--tgate", "tgate_step", type=int, default=None, metavar="GATE_STEP",
              help="T-GATE: from step GATE_STEP on, drop CFG and reuse cached cross-attention (MM-DiT"
                   " such as SD3 / FLUX: cached text-stream keys / values) (faster; >= --steps: never gate)")
@click.option("--tgate-option", "tgate_options", multiple=True, metavar="KEY=VALUE",
              help="T-GATE setting (repeatable): sp_interval (5), fi_interval (1), warm_up (2);"
                   " self-attention reuse, no effect on MM-DiT models")
@_reward_guidance_options
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--rgba", is_flag=True,
              help="Alfie RGBA generation (PixArt-layout models): centred subject, --out is an RGBA PNG, plus"
                   " <stem>.rgb.png and <stem>.alpha.png; the verifier scores the subject on a plain background")
@click.option("--background-prompt", default=None,
              help="with --rgba: the background trajectory's prompt (default \"A white background\"; the embedded"
                   " model: its exact blank canvas, no model cost)")
@click.option("--subject", default=None,
              help="with --rgba: the subject word(s) of the prompt whose attention makes the matte"
                   " (default: found by a built-in rule)")
@click.option("--compile", "compile_", is_flag=True, help=COMPILE_HELP)
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch, >= 1 (default on CPU: half the available cores, 1 to 4)")
def generate(prompts, prompts_file, out_dir, redo, model, searcher, verifier, budget, seed, steps, guidance, height,
             width, negative_prompt, device, dtype, max_batch, options, verifier_options, out, tgate_step,
             tgate_options, reward_guidance, reward_guidance_options, quiet, rgba, background_prompt, subject, threads,
             compile_) -> None:
    """Search for the best image for PROMPT and write it to --out; with several prompts (or
    --prompts FILE), load the model once and write each to --out-dir.

    With the embedded model PROMPT may be plain ("two red circles", "2 red circles",
    "a star to the left of a square"); it is mapped to the canonical prompt the model was
    trained on, which the JSON sidecar records. Every input, every prompt of a list too, is
    checked before the model loads (bad input: one `error:` line naming the prompt or the
    file's line, exit 2). Each prompt's image and sidecar are what a one-prompt run with the
    same flags writes. Ctrl-C during a search writes the best image found so far, with its
    sidecar marked "interrupted", and exits with code 130; images already written stay, and
    rerunning the command skips the prompts that are done."""
    from .errors import TTSInputError

    flags = dict(model=model, searcher=searcher, verifier=verifier, budget=budget, seed=seed, steps=steps,
                 guidance=guidance, height=height, width=width, negative_prompt=negative_prompt, max_batch=max_batch,
                 options=options, verifier_options=verifier_options, tgate_step=tgate_step,
                 tgate_options=tgate_options, rgba=rgba, background_prompt=background_prompt, subject=subject,
                 reward_guidance=reward_guidance, reward_guidance_options=reward_guidance_options)
    if len(prompts) > 1 or prompts_file is not None or out_dir is not None:
        if out is not None:
            _fail("--out names one image: with several prompts or --prompts, pass --out-dir DIR instead")
        if threads is not None and threads < 1:
            _fail(f"--threads must be at least 1, got {threads}")
        _generate_many(prompts, prompts_file, out_dir or "tts_out", redo, flags, device, dtype, threads, compile_,
                       quiet)
        return
    if not prompts:
        _fail("Missing argument 'PROMPT...': pass a PROMPT, several, or --prompts FILE")
    if redo:
        _fail("--redo goes with --out-dir (several prompts or --prompts)")
    prompt, out = prompts[0], out if out is not None else "tts_out.png"
    try:
        if threads is not None and threads < 1:
            raise TTSInputError(f"--threads must be at least 1, got {threads}")
        if rgba and not out.lower().endswith(".png"):
            raise TTSInputError(f"--rgba writes an RGBA PNG: pass an --out ending in .png, not {out}")
        request = _request(prompt, model, searcher, verifier, budget, seed, steps, guidance, height, width,
                           negative_prompt, max_batch, options, verifier_options, tgate_step, tgate_options, rgba,
                           background_prompt, subject, reward_guidance, reward_guidance_options)
        image_path, _ = _check_out(out, rgba=request.rgba, chains=request.searcher == "reflect")
        _hold_output(image_path)
        dev, torch_dtype = _device_and_dtype(device, dtype)
        if request.budget is not None and request.num_inference_steps is not None:
            from .pipelines import checks

            checks.check_budget_fits(request.budget, request.num_inference_steps)
    except TTSInputError as e:
        _fail(str(e))
    _set_threads(threads, str(dev))
    if not compile_:
        from ._startup import defer_package_inits

        defer_package_inits()
    _run_search(dict(request=request, model=model, device=dev, torch_dtype=torch_dtype, out=image_path,
                     compile=compile_), quiet)


def _generate_many(prompts, prompts_file, out_dir, redo, flags, device, dtype, threads, compile_, quiet) -> None:
    """Several prompts, one model load: every prompt checked first, then each searched and
    written to out_dir (prompt_list.py names the files); done prompts are skipped."""
    from pathlib import Path

    from .errors import TTSInputError
    from .prompt_list import PromptItem, output_stem, read_prompts_file

    try:
        items = [PromptItem(p, f"prompt {k}") for k, p in enumerate(prompts, 1)]
        if prompts_file is not None:
            items += read_prompts_file(prompts_file)
        if not items:
            raise TTSInputError("no prompt: pass PROMPT arguments or --prompts FILE")
        requests = [_item_request(item, flags) for item in items]
        folder = Path(out_dir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise TTSInputError(f"--out-dir {out_dir} is a file, not a folder")
        if not folder.exists() and not folder.parent.is_dir():
            raise TTSInputError(f"--out-dir {out_dir}: the folder {folder.parent} does not exist; create it first")
        dev, torch_dtype = _device_and_dtype(device, dtype)
        folder.mkdir(exist_ok=True)
        outs = [_check_out(str(folder / f"{output_stem(k, r.prompt)}.png"), rgba=r.rgba,
                           chains=r.searcher == "reflect")[0] for k, r in enumerate(requests, 1)]
    except TTSInputError as e:
        _fail(str(e))
    todo = [k for k, o in enumerate(outs) if redo or not _done(o)]
    n = len(items)
    if len(todo) < n:
        click.echo(f"{n - len(todo)} of {n} prompts already done in {folder} (skipped; --redo runs them again)",
                   err=True)
    if not todo:
        return
    try:
        for k in todo:  # one writer per output, as for --out
            _hold_output(outs[k])
    except TTSInputError as e:
        _fail(str(e))
    _set_threads(threads, str(dev))
    if not compile_:
        from ._startup import defer_package_inits

        defer_package_inits()
    _catch_stop_signals()
    tts = _load_pipeline(flags["model"], torch_dtype, dev, compile_)
    failed = 0
    for k in todo:
        click.echo(f"[{k + 1}/{n}] {items[k].prompt}", err=True)
        run = dict(request=requests[k], model=flags["model"], device=dev, torch_dtype=torch_dtype, out=outs[k],
                   label=items[k].where)
        if not _search_and_save(tts, run, quiet, exit_on_error=False):
            failed += 1
    if failed:
        _fail(f"{failed} of {len(todo)} prompts failed (see above); the others are written in {folder}")


def _item_request(item, flags: dict):
    """The checked request of one prompt of a list: the flags, with a JSON Lines line's overrides."""
    from .errors import TTSInputError

    f = dict(flags)
    over = dict(item.overrides)
    line_options = tuple(over.pop("options", ()))
    if "searcher" in over and over["searcher"] != flags["searcher"]:
        f["options"] = line_options
    else:
        f["options"] = tuple(flags["options"]) + line_options
    f.update(over)
    try:
        request = _request(item.prompt, f["model"], f["searcher"], f["verifier"], f["budget"], f["seed"], f["steps"],
                           f["guidance"], f["height"], f["width"], f["negative_prompt"], f["max_batch"], f["options"],
                           f["verifier_options"], f["tgate_step"], f["tgate_options"], f["rgba"],
                           f["background_prompt"], f["subject"], f["reward_guidance"], f["reward_guidance_options"])
        if request.budget is not None and request.num_inference_steps is not None:
            from .pipelines import checks

            checks.check_budget_fits(request.budget, request.num_inference_steps)
    except TTSInputError as e:
        raise TTSInputError(f"{item.where}: {e}") from None
    return request


def _done(image_path) -> bool:
    """True if image_path and its sidecar are there and the sidecar is a finished run's."""
    from .records.files import is_sidecar, sidecar_path

    side = sidecar_path(image_path)
    if not (image_path.exists() and is_sidecar(side)):
        return False
    return not json.loads(side.read_text(encoding="utf-8")).get("interrupted", False)


def _request(prompt, model, searcher, verifier, budget, seed, steps, guidance, height, width, negative_prompt,
             max_batch, options, verifier_options, tgate_step, tgate_options, rgba, background_prompt, subject,
             reward_guidance=None, reward_guidance_options=()):
    """The search the flags describe, checked (`SearchRequest.check`, its messages naming the
    flags) before torch loads: the options are parsed by the searcher's and the verifier's
    declarations, the verifier left out is the default rule's."""
    from .paths import is_default_model
    from .request import CLI_NAMES, SearchRequest, default_verifier_name
    from .searchers import searcher_params
    from .verifiers import verifier_params

    embedded = is_default_model(model)
    if verifier is None:
        verifier = default_verifier_name(embedded)
    tgate = None
    if tgate_step is not None or tgate_options:
        from .features.tgate_spec import TGate

        tgate = TGate.from_cli(tgate_step, tgate_options)
    guide = None
    if reward_guidance is not None or reward_guidance_options:
        from .features.guidance_spec import RewardGuidance

        guide = RewardGuidance.from_cli(reward_guidance, reward_guidance_options)
    request = SearchRequest(prompt, searcher=searcher, searcher_options=searcher_params(searcher).parse(options),
                            verifier=verifier, verifier_options=verifier_params(verifier).parse(verifier_options),
                            budget=budget, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                            height=height, width=width, negative_prompt=negative_prompt, max_batch=max_batch,
                            tgate=tgate, rgba=rgba, background_prompt=background_prompt, subject=subject,
                            reward_guidance=guide)
    return request.check(embedded_model=embedded, names=CLI_NAMES)


def _device_and_dtype(device: str | None, dtype: str):
    """--device (default: cuda if available) and --dtype (auto: float16 on cuda, float32
    elsewhere) as torch objects, checked."""
    import torch

    from .pipelines import checks

    dev = checks.check_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        torch_dtype = torch.float16 if dev.type == "cuda" else torch.float32
    checks.check_dtype_on_device(torch_dtype, dev)
    return dev, torch_dtype


def _check_out(out: str, rgba: bool = False, chains: bool = False):
    from .records.files import check_output_path

    return check_output_path(out, rgba=rgba, chains=chains)


def _hold_output(image_path) -> None:
    """Lock the output for this run (records/files.py `OutputLock`): a second run on the same
    --out is refused with one line; released when the command ends."""
    from .records.files import OutputLock

    lock = OutputLock(image_path).acquire()
    click.get_current_context().call_on_close(lock.release)


def _load_pipeline(model, torch_dtype, device, compile_: bool, bar_off: bool = False):
    """The TTSPipeline on `device` (a loading error: one `error:` line, exit 2)."""
    from contextlib import nullcontext

    from ._startup import light_loading
    from .errors import TTSInputError
    from .pipelines import TTSPipeline

    _quiet_libraries()
    try:
        with nullcontext() if compile_ else light_loading():  # light: docs/startup.md
            tts = TTSPipeline.from_pretrained(model, torch_dtype=torch_dtype, compile=compile_)
        if bar_off:
            tts.set_progress_bar_config(disable=True)
        return tts.to(device)
    except TTSInputError as e:
        _fail(str(e))


def _run_search(run: dict, quiet: bool) -> None:
    """Load the model, search, write the image and its sidecar; SIGINT, SIGTERM or SIGHUP
    write the best so far (`_write_interrupted`)."""
    _catch_stop_signals()
    tts = _load_pipeline(run["model"], run["torch_dtype"], run["device"], run.get("compile", False))
    _search_and_save(tts, run, quiet)


def _search_and_save(tts, run: dict, quiet: bool, exit_on_error: bool = True) -> bool:
    """Search run["request"], write image and sidecar to run["out"]. A bad input or a result
    that is not a picture exits (2 / 1), or (exit_on_error False) prints its `error:` line and
    returns False; a stop signal writes the best so far and exits (`_search_or_stop`)."""
    result = _search_or_stop(tts, run, quiet, exit_on_error)
    if result is None:
        return False
    image_path, sidecar = _save(result, run["out"])
    click.echo(f"best score {result.best_score:.4f} after {result.nfe} NFE "
               f"({len(result.candidates)} candidates, {result.timings.get('total', 0):.1f} s)")
    click.echo(f"wrote {image_path} and {sidecar}")
    return True


def _search_or_stop(tts, run: dict, quiet: bool, exit_on_error: bool = True):
    """The finished search's result (None: refused, with exit_on_error False); on a stop signal
    the best so far is written and the process exits (130 / 143 / 129)."""
    from .errors import SearchInterrupted, TTSInputError

    try:
        result = tts.run(run["request"], progress=not quiet)
    except TTSInputError as e:
        if exit_on_error:
            _fail(str(e))
        click.echo(f"error: {run.get('label', run['request'].prompt)}: {e}", err=True)
        return None
    except KeyboardInterrupt as stop:
        _write_interrupted(run, stop.result if isinstance(stop, SearchInterrupted) else None)
    from .records.result import image_problem

    problem = image_problem(result)  # not a picture (non-finite output, one flat colour): told, never presented
    if problem is not None:
        click.echo(f"error: {run.get('label') + ': ' if run.get('label') else ''}{problem}; nothing written", err=True)
        if exit_on_error:
            sys.exit(EXIT_BAD_OUTPUT)
        return None
    return result


def _save(result, out):
    """Write image and sidecar (checked again: the folder may have changed during the search)."""
    from .errors import TTSInputError

    try:
        return result.save(out, command_line=_command_line())
    except (TTSInputError, OSError) as e:
        _fail(f"could not write {out}: {e}")


def _write_interrupted(run: dict, result) -> None:
    """A stop signal: write the best candidate found so far (sidecar marked "interrupted",
    with the signal's name, and the full search's `run`), exit 128 + the signal number."""
    name = _STOPPED["signal"] or "SIGINT"
    code = _exit_code(name)
    if result is None:
        click.echo(f"interrupted ({name}) before any candidate was scored; nothing written", err=True)
        sys.exit(code)
    result.interrupted, result.signal = True, name
    from .records.result import image_problem

    problem = image_problem(result)
    if problem is not None:
        click.echo(f"interrupted ({name}); the best so far is not a picture ({problem}); nothing written", err=True)
        sys.exit(code)
    image_path, sidecar = _save(result, run["out"])
    click.echo(f"interrupted ({name}) after {result.nfe} of {result.settings.get('budget')} NFE: wrote the best so"
               f" far (score {result.best_score:.4f}) to {image_path} and {sidecar}", err=True)
    sys.exit(code)


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
    from .records.result import READS_SIDECAR_VERSIONS, SIDECAR_VERSION
    from .errors import TTSInputError
    from .request import SearchRequest

    from pathlib import Path

    from .records.sidecar_check import check_sidecar, read_sidecar

    if threads is not None and threads < 1:
        _fail(f"--threads must be at least 1, got {threads}")
    try:  # every field replay reads, by type, before any of it is used (one line naming the bad field)
        record = read_sidecar(sidecar)
        check_sidecar(record, sidecar, READS_SIDECAR_VERSIONS, SIDECAR_VERSION)
    except TTSInputError as e:
        _fail(str(e))
    run = record["run"]
    version = record.get("sidecar_version")
    # where it ran: version 1 recorded it in the run, later versions in the settings only
    ran_on = run if version == 1 else (record.get("settings") or {})
    run = {k: v for k, v in run.items() if not (version == 1 and k in ("dtype", "device"))}
    if run.get("seed") is None:
        _fail(f"{sidecar} records no seed (the search was run with a torch.Generator), so its noise cannot be replayed")

    from .records.provenance import describe_weights, versions
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

    try:  # the recorded search checked like any request, before the model loads
        from .paths import is_default_model

        request = SearchRequest.from_dict(run)
        request.check(embedded_model=is_default_model(source))
    except TTSInputError as e:
        _fail(f"{sidecar}: {e}")
    import torch

    if device is None:
        device = ran_on.get("device") or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            click.echo(f"warning: the sidecar ran on {device}, which is not available here; replaying on cpu "
                       "(pixels may differ)", err=True)
            device = "cpu"
    _set_threads(threads, device)
    from ._startup import defer_package_inits

    defer_package_inits()  # replay never compiles
    torch_dtype = getattr(torch, str(ran_on.get("dtype") or "float32"))
    default_out = out is None
    if default_out:
        out = os.path.splitext(sidecar)[0] + "-replay.png"
    try:  # before the search: a bad path loses no work
        out, new_sidecar = _check_out(out, rgba=request.rgba, chains=request.searcher == "reflect")
        _check_replay_out(Path(sidecar), record, out, new_sidecar, default_out)
        _hold_output(out)
    except TTSInputError as e:
        _fail(str(e))
    _catch_stop_signals()
    tts = _load_pipeline(source, torch_dtype, device, False, bar_off=True)
    result = _search_or_stop(tts, dict(request=request, model=source, device=device, torch_dtype=torch_dtype, out=out),
                             quiet)
    image_path, new_sidecar = _save(result, out)
    click.echo(f"best score {result.best_score:.4f} after {result.nfe} NFE (recorded: "
               f"{(record.get('best') or {}).get('score')})")
    click.echo(f"wrote {image_path} and {new_sidecar}")


def _check_replay_out(source: "Path", record: dict, out, new_sidecar, default_out: bool) -> None:
    """`replay` never writes over its input (the sidecar it reads, or the image beside it),
    and its default `<stem>-replay.png` never replaces an image that no tts-diffusion sidecar
    pairs with."""
    from .errors import TTSInputError
    from .records.files import is_sidecar

    def same(a, b) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return os.path.abspath(a) == os.path.abspath(b)

    image = record.get("image")
    inputs = [source] + ([source.with_name(image)] if isinstance(image, str) and image else [])
    for path in (out, new_sidecar):
        for given in inputs:
            if os.path.lexists(path) and same(path, given):
                raise TTSInputError(f"replay would overwrite its input {given} with --out {out}: choose another --out")
    if default_out and os.path.lexists(out) and not is_sidecar(new_sidecar):
        raise TTSInputError(f"{out} exists and no tts-diffusion sidecar pairs with it: pass --out to choose where the"
                            " replay goes, or move that file")


@main.command()
@click.option("--methods", default="best_of_n", show_default=True,
              help="comma-separated searchers (see `tts-diffusion list`)")
@click.option("--budgets", default="1,4,16", show_default=True,
              help="comma-separated budgets, in multiples of one sample's NFE (--steps)")
@click.option("--prompts", "prompt_set", default="shapes_eval", show_default=True,
              help="prompt set: shapes_eval (the shipped 600-prompt eval split), a .json file ({\"prompts\": [...]}"
                   " of strings or {\"prompt\", \"category\"}) or a .txt file (one prompt a line)")
@click.option("--num-prompts", type=int, default=None,
              help="use this many prompts, the same number from every category (default: all)")
@click.option("--seeds", default="0", show_default=True,
              help="comma-separated seeds; prompt k's search uses seed*100003+k whatever the process split")
@click.option("--model", default=None, help="diffusers folder or hub id (default: the embedded shapes model)")
@click.option("--verifier", default=None,
              help="what guides the search (default: oracle for the shapes model, else clip)")
@click.option("--judge", default=None,
              help="what scores the returned image (default: as --verifier); the oracle's verdicts give accuracy")
@click.option("--steps", type=int, default=None, help="denoising steps per sample (default: the model's)")
@click.option("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
@click.option("--max-batch", type=int, default=64, show_default=True, help="rows per denoiser call (memory), >= 1")
@click.option("--option", "-o", "options", multiple=True, metavar="METHOD.KEY=VALUE",
              help="a searcher option for one method, e.g. -o smc.reward_scale=10 (repeatable)")
@click.option("--verifier-option", "verifier_options", multiple=True, metavar="KEY=VALUE",
              help="option of the guiding verifier (repeatable)")
@click.option("--device", default=None,
              help="cpu, cuda or cuda:N (default: this process's device under accelerate, else cuda if available)")
@click.option("--verifier-device", default=None,
              help="put the verifier and the judge on this device (e.g. cuda:1 beside a model on cuda:0)")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="auto: float16 on cuda, float32 on cpu")
@click.option("--out", default="bench.jsonl", show_default=True,
              help="JSON Lines records (resumed when it exists); the summary goes to <stem>.summary.json and"
                   " <stem>.png")
@click.option("--compile", "compile_", is_flag=True, help=COMPILE_HELP)
@click.option("--threads", type=int, default=None,
              help="torch CPU threads per process (default: half of the process's share of the cores, at most 4)")
@click.option("--pin-cores", "pin_cores", is_flag=True,
              help="under accelerate/torchrun, pin each process of this host to a block of physical cores of its own"
                   " on its GPU's NUMA node (measured neutral on a one-node 4-GPU host; for hosts with several nodes)")
@click.option("--preview-decoder", default=None, metavar="DIR",
              help="score intermediate x0 estimates (smc, paths, svdd, code, rbf) on this small decoder's previews:"
                   " a TAESD-format folder (diffusers AutoencoderTiny); final images still use the full VAE")
@click.option("--pool", is_flag=True,
              help="one budget shared by all the prompts (budget x prompts samples per method, budget and seed):"
                   " with -o METHOD.stop_score=S prompts that reach S early hand their rest to the others")
@_reward_guidance_options
def bench(methods, budgets, prompt_set, num_prompts, seeds, model, verifier, judge, steps, guidance, max_batch,
          options, verifier_options, device, verifier_device, dtype, out, compile_, threads, pin_cores,
          preview_decoder, pool, reward_guidance, reward_guidance_options) -> None:
    """Accuracy against NFE: every method at every budget on every prompt (and seed),
    guided by --verifier and judged by --judge, one JSON Lines record per search.

    Rerunning the same command resumes an interrupted sweep (records already in --out are
    skipped). Under `accelerate launch --multi_gpu --num_processes N -m tts_diffusion.cli bench`
    the prompts are split over the processes and the records are the same as one process's."""
    from .bench import SweepConfig, run_sweep
    from .errors import TTSInputError

    try:
        from .paths import is_default_model
        from .request import default_verifier_name
        from .verifiers import verifier_params

        from .features.guidance_spec import RewardGuidance

        guide = verifier if verifier is not None else default_verifier_name(is_default_model(model))
        cfg = SweepConfig(out=out, methods=_csv(methods, str, "--methods"), budgets=_csv(budgets, int, "--budgets"),
                          prompt_set=prompt_set, num_prompts=num_prompts, seeds=_csv(seeds, int, "--seeds"),
                          model=model, verifier=verifier, judge=judge, steps=steps, guidance=guidance,
                          max_batch=max_batch, options=_method_options(options), device=device,
                          verifier_device=verifier_device, dtype=dtype, compile=compile_, threads=threads,
                          pin_cores=pin_cores, preview_decoder=preview_decoder, pool=pool,
                          reward_guidance=RewardGuidance.from_cli(reward_guidance, reward_guidance_options),
                          verifier_options=verifier_params(guide).parse(verifier_options) if verifier_options else {})
        cfg.check()
        _quiet_libraries()
        run_sweep(cfg, echo=click.echo)
    except TTSInputError as e:
        _fail(str(e))


def _csv(text: str, kind: type, what: str) -> list:
    from .errors import TTSInputError

    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise TTSInputError(f"{what} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None


def _method_options(pairs: tuple[str, ...]) -> dict[str, dict]:
    """`METHOD.KEY=VALUE` strings to {method: {key: value}}, each parsed by its searcher's spec."""
    from .errors import TTSInputError
    from .searchers import available_searchers, searcher_params

    raw: dict[str, list[str]] = {}
    for p in pairs:
        head = p.split("=", 1)[0]
        if "=" not in p or "." not in head:
            raise TTSInputError(f"-o {p!r} must look like METHOD.KEY=VALUE, e.g. smc.reward_scale=10")
        method, rest = p.split(".", 1)
        if method not in available_searchers():
            raise TTSInputError(f"-o {p!r}: unknown searcher {method!r}; available: {', '.join(available_searchers())}")
        raw.setdefault(method, []).append(rest)
    return {m: searcher_params(m).parse(ps) for m, ps in raw.items()}


#: steps `list --searcher` assumes when neither --steps nor the searcher's own defaults say
LIST_STEPS = 20


def _print_options(options: list[dict], header: str) -> None:
    """A declaration's options (`Param.describe()`), one per two lines."""
    click.echo(header)
    for o in options:
        default = "derived" if o["default"] is None else o["default"]
        if isinstance(default, list):
            default = ",".join(str(v) for v in default)
        click.echo(f"  {o['name']:<20} {o['type']:<6} default {default!s:<12} {o['allowed']}")
        click.echo(f"  {'':<20} {o['help']}")


@main.command(name="list")
@click.option("--searcher", "searcher", default=None, metavar="NAME",
              help="print this searcher's parameters and its minimum budget")
@click.option("--verifier", "verifier", default=None, metavar="NAME", help="print this verifier's options")
@click.option("--steps", type=int, default=None, metavar="N",
              help=f"steps for the minimum budget (default: the searcher's own, else {LIST_STEPS})")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="searcher option the minimum budget should assume (repeatable)")
@click.option("--json", "as_json", is_flag=True,
              help="print the declarations as JSON: each option's name, type, default (null where derived at run"
                   " time), allowed values and help")
def list_(searcher: str | None, verifier: str | None, steps: int | None, options: tuple[str, ...],
          as_json: bool) -> None:
    """List the available searchers, verifiers and models; with --searcher / --verifier, the
    parameters of one (type, default, allowed values, help) and a searcher's minimum budget."""
    # the registries answer without importing torch (the searcher and verifier modules do)
    from .errors import TTSInputError
    from .paths import default_model_path
    from .searchers import available_searchers, run_defaults
    from .verifiers import available_verifiers

    if steps is not None and steps < 1:
        _fail(f"--steps must be at least 1, got {steps}")
    if (steps is not None or options) and searcher is None:
        _fail("--steps and -o go with --searcher NAME")
    if searcher is not None or verifier is not None:
        try:
            found = {}
            if searcher is not None:
                found["searcher"] = _searcher_declaration(searcher, steps, options)
            if verifier is not None:
                found["verifier"] = _verifier_declaration(verifier)
        except TTSInputError as e:
            _fail(str(e))
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        if searcher is not None:
            d = found["searcher"]
            _print_options(d["options"], f"searcher {searcher}: {d['description']}")
            given = "".join(f" {k}={v}" for k, v in d["minimum_budget"]["options"].items())
            click.echo(f"minimum budget at {d['minimum_budget']['num_inference_steps']} steps"
                       f"{' with' + given if given else ''}: {d['minimum_budget']['nfe']} NFE")
        if verifier is not None:
            _print_options(found["verifier"]["options"], f"verifier {verifier}: {found['verifier']['description']}")
        return

    if as_json:
        click.echo(json.dumps({"searchers": {k: {"description": d, "run_defaults": run_defaults(k)}
                                             for k, d in available_searchers().items()},
                               "verifiers": {k: {"description": d} for k, d in available_verifiers().items()}},
                              indent=2))
        return
    click.echo("searchers:")
    for k, d in available_searchers().items():
        rd = run_defaults(k)
        given = [f"{rd[key]} {unit}" for key, unit in (("num_inference_steps", "steps"), ("budget", "NFE"))
                 if key in rd]
        extra = f" [defaults: {', '.join(given)}]" if given else ""
        click.echo(f"  {k:<12} {d}{extra}")
    click.echo("verifiers:")
    for k, d in available_verifiers().items():
        click.echo(f"  {k:<12} {d}")
    click.echo("models:")
    default = default_model_path()
    state = "" if (default / "model_index.json").exists() else "  (missing)"
    click.echo(f"  {'(default)':<12} embedded shapes model at {default}{state}")
    click.echo("  any diffusers folder or hub id of: Stable Diffusion 1.x/2.x, SDXL, PixArt-Sigma, SD3, FLUX")
    click.echo("details: tts-diffusion list --searcher NAME [--steps N] | --verifier NAME [--json]")


def _searcher_declaration(name: str, steps: int | None, options: tuple[str, ...]) -> dict:
    """Searcher `name`'s declaration as `list` prints it, with its minimum budget at `steps`
    (default: its own steps, else LIST_STEPS) and the `-o` options given."""
    from .searchers import searcher_entry

    entry = searcher_entry(name)
    opts = entry.params.parse(options)
    n = steps if steps is not None else entry.run_defaults.get("num_inference_steps", LIST_STEPS)
    return {"name": name, "description": entry.description, "options": entry.params.describe(),
            "run_defaults": dict(entry.run_defaults),
            "minimum_budget": {"num_inference_steps": n, "options": opts, "nfe": entry.min_budget(n, opts)}}


def _verifier_declaration(name: str) -> dict:
    from .verifiers import verifier_entry

    entry = verifier_entry(name)
    return {"name": name, "description": entry.description, "options": entry.params.describe()}


@main.command()
@click.option("--model", default=None, help="diffusers folder or hub id, fixed at start-up (default: the embedded shapes model)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind; anything but loopback is reachable from other machines (a warning is printed)")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--share", is_flag=True, help="also open a public gradio.live link (a warning is printed)")
@click.option("--auth", default=None, metavar="USER:PASS", help="ask visitors for this user name and password")
@click.option("--max-budget", type=int, default=2000, show_default=True, help="most NFE one request may spend")
@click.option("--max-steps", type=int, default=100, show_default=True, help="most denoising steps per sample")
@click.option("--max-image-size", type=int, default=1024, show_default=True, help="most pixels per image side")
@click.option("--max-queue", type=int, default=16, show_default=True,
              help="requests that may wait at once; more are refused with a message")
@click.option("--concurrency", type=int, default=1, show_default=True, help="requests that run at the same time")
@click.option("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True,
              help="auto: float16 on cuda, float32 on cpu")
@click.option("--max-batch", type=int, default=16, show_default=True, help="rows per denoiser call (memory)")
@click.option("--critic-model", default=None, metavar="DIR",
              help="local transformers vision-language model folder for reflect's critic=vlm (offered on the page "
                   "by its folder name; without it the page has no vlm critic)")
@click.option("--refiner-model", default=None, metavar="DIR",
              help="local transformers causal LM folder for reflect's refiner=lm (offered on the page by its folder "
                   "name; without it the page has no lm refiner)")
def demo(model, host, port, share, auth, max_budget, max_steps, max_image_size, max_queue, concurrency, device, dtype,
         max_batch, critic_model, refiner_model) -> None:
    """Serve the Gradio demo (needs the `demo` extra: pip install 'tts-diffusion[demo]').

    The model and every weight path (verifier weights, the reflect critic and refiner) are
    chosen here, when the server starts; visitors pick the prompt, searcher, verifier and
    their options within the limits below, and no path."""
    from .errors import TTSInputError

    if not 1 <= port <= 65535:
        _fail(f"--port must be in [1, 65535], got {port}")
    if max_batch < 1:
        _fail(f"--max-batch must be at least 1, got {max_batch}")
    try:
        from .demo.request import DemoLimits
        from .demo.server import parse_auth
        from .demo.server_models import ServerModels

        limits = DemoLimits(max_budget=max_budget, max_steps=max_steps, max_image_size=max_image_size,
                            max_queue=max_queue, concurrency=concurrency)
        models = ServerModels(critic_model=critic_model, refiner_model=refiner_model)
        parse_auth(auth)
        from .demo.app import import_gradio

        import_gradio()
    except TTSInputError as e:
        _fail(str(e))
    from .demo.server import launch

    _quiet_libraries()
    try:
        launch(model, host=host, port=port, share=share, auth=auth, limits=limits, device=device, dtype=dtype,
               max_batch=max_batch, models=models)
    except TTSInputError as e:
        _fail(str(e))


if __name__ == "__main__":  # pragma: no cover
    main()
