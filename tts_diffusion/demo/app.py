"""The Gradio page: layout and wiring of `DemoHandlers`.

Prompt and Generate sit in a row that stays at the top of the window at every size. Below
it, the controls (left) and the results (right: status, best image, candidates, plot,
downloads); on a narrow screen the results come first, so that after Generate the status,
the progress and the best image are in view (style.py). The searcher's own
hyper-parameters get one widget each, built from its registered spec (`params.Param`):
numbers with their range, checkboxes for flags, dropdowns for choices, text for lists and
prompts; an empty number means "derived" where the default is derived. Every searcher's and
verifier's widgets are built once, in a group shown only while it is selected, inside the
"Advanced" accordion.
"""
from __future__ import annotations

import os
from typing import Any

from ..params import Param
from ..searchers import available_searchers, run_defaults
from ..verifiers import available_verifiers
from .files import RunFiles
from .handlers import BEST_LABEL, DemoHandlers
from .render import example_prompts
from .request import AUTO, TOGGLES, DemoLimits, ensemble_members, page_params
from .server_models import ServerModels
from .style import SHOW_STATUS_JS

#: the page's default budget, in samples (a search needs a few to show anything)
PAGE_SAMPLES = 8


def import_gradio():
    """gradio, with its analytics and version check off (the demo never phones home); also
    checks for matplotlib, which draws the score plot."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
        import matplotlib  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        from ..errors import TTSInputError

        raise TTSInputError(f"the demo needs gradio and matplotlib ({e.name} is missing): "
                            f"pip install 'tts-diffusion[demo]'") from e
    return gr


def param_widget(gr: Any, p: Param, elem_id: str | None = None) -> Any:
    """One widget for one parameter of a spec: a number box with the declared range, a
    checkbox for a flag, a dropdown for choices (`FixedChoice`), text for lists and prompts.
    A derived number (default None) is a text box, empty meaning "derived" (a number box
    cannot be empty: the page sends 0)."""
    from .choices import FixedChoice

    derived = p.default is None
    info = f"{p.help} — {p.allowed()}"
    if p.choices is not None:
        choices = ([AUTO] if derived or p.nullable else []) + list(p.choices)
        return FixedChoice(choices=choices, value=AUTO if derived else p.default, label=p.name, info=info,
                           elem_id=elem_id)
    if p.type is bool:
        if derived:
            return FixedChoice(choices=[AUTO, "true", "false"], value=AUTO, label=p.name, info=info, elem_id=elem_id)
        return gr.Checkbox(value=bool(p.default), label=p.name, info=info, elem_id=elem_id)
    if p.type in (int, float) and not derived:
        step = 1 if p.type is int else _float_step(p)
        return gr.Number(value=p.default, label=p.name, info=info, precision=0 if p.type is int else None,
                         minimum=p.low, maximum=p.high, step=step, elem_id=elem_id)
    if derived:
        return gr.Textbox(value="", label=p.name, info=info + "; leave empty to derive it", elem_id=elem_id,
                          placeholder="empty: derived")
    default = ",".join(str(v) for v in p.default) if p.type is tuple else str(p.default)
    return gr.Textbox(value=default, label=p.name, info=info, elem_id=elem_id, placeholder="empty: default")


def _float_step(p: Param) -> float:
    if p.low is not None and p.high is not None and p.high - p.low <= 1:
        return 0.01
    return 0.1


def _default_verifier(tts: Any, names: list[str]) -> str:
    for name in (("oracle",) if getattr(tts, "is_default_model", False) else ()) + ("clip",):
        if name in names:
            return name
    return names[0]


def _run_settings(tts: Any, searcher: str, limits: DemoLimits) -> tuple[int, int]:
    """(steps, budget) shown for a searcher: its run defaults, else the model's steps and
    `PAGE_SAMPLES` samples' worth (capped by the limits)."""
    rd = run_defaults(searcher)
    steps = int(rd.get("num_inference_steps") or tts.defaults.get("num_inference_steps", 25))
    budget = int(rd.get("budget") or PAGE_SAMPLES * steps)
    return min(steps, limits.max_steps), min(budget, limits.max_budget)


def settings_on_switch(tts: Any, name: str, before: str, limits: DemoLimits) -> tuple[int, int] | None:
    """New (steps, budget) for the page when the searcher changes from `before` to `name`:
    only on entering or leaving a searcher with its own defaults (rbf: 10 steps, 500 NFE),
    so what the visitor typed otherwise stays."""
    known = available_searchers()
    if name in known and (run_defaults(name) or (before in known and run_defaults(before))):
        return _run_settings(tts, name, limits)
    return None


def build_demo(tts: Any, limits: DemoLimits | None = None, *, files_root: str | None = None,
               max_batch: int = 16, title: str = "tts-diffusion", models: ServerModels | None = None) -> Any:
    """The Gradio Blocks app serving `tts` (a `TTSPipeline`), with requests queued
    (`limits.max_queue` waiting, `limits.concurrency` running at once). `models`: the
    critic / refiner folders the page may offer (fixed choices; none by default)."""
    gr = import_gradio()
    from .choices import FixedChoice

    limits = limits or DemoLimits()
    models = models or ServerModels()
    handlers = DemoHandlers(tts, limits, files=RunFiles(files_root), max_batch=max_batch, models=models)
    searchers = available_searchers()
    verifiers = available_verifiers()
    s_names, v_names = list(searchers), list(verifiers)
    s_default = "best_of_n" if "best_of_n" in searchers else s_names[0]
    v_default = _default_verifier(tts, v_names)
    steps0, budget0 = _run_settings(tts, s_default, limits)
    toggles = TOGGLES
    members = ensemble_members(tts)
    model_name = "the embedded shapes model" if getattr(tts, "is_default_model", False) else \
        type(getattr(tts, "pipe", tts)).__name__

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## {title}: test-time scaling for text-to-image\nSearch the sampler's noise for the image a "
                    f"verifier scores best. Model: {model_name}.", elem_id="header")
        with gr.Row(elem_id="prompt-row", equal_height=True):
            prompt = gr.Textbox(label="Prompt", placeholder="a photo of two red circles", scale=5, elem_id="prompt",
                                max_lines=3, min_width=120)
            run = gr.Button("Generate", variant="primary", scale=1, elem_id="generate", min_width=90)
        with gr.Row(elem_id="main"):
            with gr.Column(scale=2, min_width=300, elem_id="controls"):
                negative = gr.Textbox(label="Negative prompt", elem_id="negative-prompt")
                searcher = FixedChoice(s_names, value=s_default, label="Searcher", info=searchers[s_default],
                                       elem_id="searcher")
                verifier = FixedChoice(v_names, value=v_default, label="Verifier", info=verifiers[v_default],
                                       elem_id="verifier")
                ens = FixedChoice(members, multiselect=True, label="Ensemble members", elem_id="members",
                                  value=[m for m in ("clip", "oracle") if m in members],
                                  visible=v_default == "ensemble")
                with gr.Row():
                    budget = gr.Number(budget0, label="Budget (NFE)", precision=0, elem_id="budget", min_width=120,
                                       info=f"one sample costs one NFE per step; at most {limits.max_budget}")
                    seed = gr.Number(0, label="Seed", precision=0, elem_id="seed", info="the seed used is shown here",
                                     min_width=120)
                randomize = gr.Checkbox(False, label="Randomize seed", elem_id="randomize")
                gr.Markdown(limits.describe(), elem_id="limits")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    with gr.Row():
                        steps = gr.Number(steps0, label="Steps", precision=0, elem_id="steps", min_width=120,
                                          info=f"denoising steps per sample (1 to {limits.max_steps})")
                        guidance = gr.Number(tts.defaults.get("guidance_scale"), label="Guidance scale",
                                             elem_id="guidance", info="classifier-free guidance weight", min_width=120)
                    with gr.Row():
                        height = gr.Number(tts.defaults.get("height") or 0, label="Height", precision=0,
                                           min_width=120, info=f"px, at most {limits.max_image_size}; 0: the model's own")
                        width = gr.Number(tts.defaults.get("width") or 0, label="Width", precision=0, min_width=120,
                                          info=f"px, at most {limits.max_image_size}; 0: the model's own")
                    toggle_boxes = {k: gr.Checkbox(False, label=label, elem_id=f"toggle-{k}")
                                    for k, label in toggles.items()}
                    s_groups, s_widgets = _param_groups(gr, "searcher", s_names, s_default, models)
                    v_groups, v_widgets = _param_groups(gr, "verifier", v_names, v_default, models)
                examples = example_prompts() if getattr(tts, "is_default_model", False) else []
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="Example prompts")
            with gr.Column(scale=3, min_width=300, elem_id="results"):
                status = gr.Markdown("Type a prompt and press **Generate**.", elem_id="status")
                with gr.Row(elem_id="best-row"):
                    best = gr.Image(label=BEST_LABEL, type="filepath", format="png", interactive=False,
                                    elem_id="best-image", height=520, min_width=160, buttons=["download", "fullscreen"])
                    matte = gr.Image(label="Matte (alpha: white is opaque)", type="filepath", format="png",
                                     interactive=False, elem_id="matte", height=520, visible=False, min_width=160,
                                     buttons=["download", "fullscreen"])
                gallery = gr.Gallery(label="Candidates, best first (score, NFE, seed)", columns=4, height="auto",
                                     object_fit="contain", fit_columns=False, elem_id="candidates",
                                     buttons=["download", "fullscreen"])
                plot = gr.Plot(label="Score against NFE", show_label=False, format="png", elem_id="trace-plot")
                with gr.Accordion("Reflection rounds", visible=False, elem_id="chains-box") as chains_box:
                    chains = gr.Gallery(label="Rounds", columns=4, height="auto", fit_columns=False,
                                        elem_id="chains")
                    chains_table = gr.Markdown(elem_id="chains-table")
                files = gr.File(label="Downloads: best image (RGBA: also the RGB image and the matte) and the JSON "
                                      "run log", file_count="multiple", interactive=False, elem_id="downloads")

        outputs = {"status": status, "seed": seed, "best": best, "matte": matte, "gallery": gallery, "plot": plot,
                   "files": files, "chains": chains, "chains_table": chains_table}
        fixed = {"prompt": prompt, "negative_prompt": negative, "searcher": searcher, "verifier": verifier,
                 "members": ens, "budget": budget, "seed": seed, "randomize_seed": randomize, "steps": steps,
                 "guidance": guidance, "height": height, "width": width, **toggle_boxes}
        inputs = list(fixed.values()) + [w for _, _, w in s_widgets + v_widgets]

        def on_generate(*values):
            data = dict(zip(inputs, values))
            raw = {name: data[c] for name, c in fixed.items()}
            raw["searcher_options"] = _group_values(s_widgets, data)
            raw["verifier_options"] = _group_values(v_widgets, data)
            for update in handlers.generate(raw):
                out = {outputs[k]: v for k, v in update.items() if k in outputs}
                if "best_label" in update:  # always sent with "best"
                    out[best] = gr.Image(value=update["best"], label=update["best_label"])
                if "matte_visible" in update:
                    out[matte] = gr.Image(value=update.get("matte"), visible=update["matte_visible"])
                if "chains_visible" in update:
                    out[chains_box] = gr.Accordion(visible=update["chains_visible"], open=True)
                yield out

        out_components = set(outputs.values()) | {chains_box}
        for trigger, api_name in ((run.click, "generate"), (prompt.submit, False)):
            trigger(on_generate, inputs=inputs, outputs=out_components, show_progress="hidden", api_name=api_name)
            trigger(None, js=SHOW_STATUS_JS)

        previous = gr.State(s_default)

        def on_searcher(name: str, before: str):
            out = {g: gr.Group(visible=n == name) for n, g in s_groups.items()}
            out.update({searcher: gr.Dropdown(info=searchers.get(name, "")), previous: name})
            change = settings_on_switch(tts, name, before, limits)
            if change is not None:
                out[steps], out[budget] = change
            return out

        searcher.change(on_searcher, inputs=[searcher, previous],
                        outputs=set(s_groups.values()) | {steps, budget, searcher, previous}, api_name=False)

        def on_verifier(name: str):
            out = {g: gr.Group(visible=n == name) for n, g in v_groups.items()}
            out.update({ens: gr.Dropdown(visible=name == "ensemble"),
                        verifier: gr.Dropdown(info=verifiers.get(name, ""))})
            return out

        verifier.change(on_verifier, inputs=verifier, outputs=set(v_groups.values()) | {ens, verifier}, api_name=False)

    # gradio starts every request (up to its queue size); the demo's own queue holds searches
    # to `limits.concurrency` at once and tells each waiting visitor its place (waiting.py)
    demo.queue(max_size=limits.max_queue, default_concurrency_limit=limits.concurrency + limits.max_queue)
    demo.tts_handlers = handlers  # for tests and embedding
    return demo


def _param_groups(gr: Any, kind: str, names: list[str], selected: str, models: ServerModels):
    """One hidden group of widgets per searcher / verifier; (groups by name, [(owner, param, widget)])."""
    groups, widgets = {}, []
    for name in names:
        params = page_params(kind, name, models)
        if not params:
            continue
        with gr.Group(visible=name == selected, elem_id=f"{kind}-options-{name}") as g:
            gr.Markdown(f"**{name}** options", padding=True)
            for p in params:
                widgets.append((name, p.name, param_widget(gr, p, elem_id=f"{kind}-{name}-{p.name}")))
        groups[name] = g
    return groups, widgets


def _group_values(widgets: list, data: dict) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for owner, pname, w in widgets:
        out.setdefault(owner, {})[pname] = data.get(w)
    return out
