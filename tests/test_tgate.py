"""T-GATE as a process option (features/tgate.py).

Faithfulness: a gate at or past the last step is bit-identical to the ungated process; on a
tiny SD-1.5-shaped pipeline the gated process reproduces the reference package `tgate==1.0.0`
for the same latents (fixture by scripts/tgate_reference.py). Tolerance there:
max |ours - reference| <= 1e-5 * max |reference| + 1e-5 on the final latents (float32, CPU;
the two differ only in the order of float operations); the ungated output differs from the
reference by 4e-2 .. 1.4e-1, so the check cannot pass without T-GATE's phases.
"""
import json
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tts_diffusion.testing.helpers import BrightnessVerifier, metered_steps
from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline, pipeline_call_kwargs
from tts_diffusion import TGate, TTSInputError, TTSPipeline
from tts_diffusion.core.budget import Budget
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.features.tgate import CACHE, COMPUTE, REUSE, active_tgate, enable_tgate, model_kind

FIXTURE = Path(__file__).parent / "fixtures" / "tgate" / "reference.pt"
PROMPT = "a red circle"


def _proc(pipe, family, steps, tgate=None, guidance=5.0, max_batch=16):
    kw = pipeline_call_kwargs(family)
    proc = DenoisingProcess.from_pipeline(pipe, steps, guidance, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw.get("max_sequence_length"),
                                          max_batch=max_batch).for_call()
    enable_tgate(proc, tgate)
    return proc


def _sample(proc, seeds, budget=None):
    cond = proc.encode(PROMPT)
    b = budget or Budget(10**6)
    with proc.metered(b):
        x, pred = proc.sample(proc.noise_from_seeds(seeds), cond)
    return x, pred, b


# ------------------------------------------------------------------------- the schedule
def test_plan_is_the_reference_table():
    """REFERENCES 1.2 for the defaults (g=10, sp=5, fi=1, warm-up 2) and a case with fi=2."""
    tg = TGate(10, 5, 1, 2)
    sa = [tg.plan(s)[1] for s in range(14)]
    assert sa == [COMPUTE, COMPUTE, CACHE, REUSE, REUSE, CACHE, REUSE, REUSE, REUSE, CACHE,
                  CACHE, CACHE, CACHE, CACHE]
    ca = [tg.plan(s)[0] for s in range(14)]
    assert ca == [COMPUTE] * 9 + [CACHE] + [REUSE] * 4
    assert [tg.plan(s)[2] for s in range(14)] == [False] * 9 + [True] + [False] * 4
    tg = TGate(6, 3, 2, 1)
    assert [tg.plan(s)[1] for s in range(8)] == [COMPUTE, CACHE, REUSE, CACHE, REUSE, CACHE, CACHE, REUSE]


# ------------------------------------------------------------------------- faithfulness
@pytest.mark.parametrize("family", ["sd15", "sdxl", "pixart_sigma", "sd3", "flux"])
def test_gate_at_or_past_the_last_step_is_bit_identical(tiny_pipe, family):
    pipe = tiny_pipe(family)
    ref, _, b0 = _sample(_proc(pipe, family, 4), [1, 2, 3])
    gated, _, _ = _sample(_proc(pipe, family, 4, TGate(2, 1, 1, 0)), [1, 2, 3])  # installs the hooks
    assert not torch.equal(gated, ref)
    for gate in (4, 9):
        proc = _proc(pipe, family, 4, gate)
        assert active_tgate(proc) is None and proc.settings()["tgate"]["gate_step"] == gate
        x, _, b = _sample(proc, [1, 2, 3])
        rows_per_nfe = 1 if family == "flux" else 2  # FLUX-dev: distilled guidance, no CFG batch
        assert torch.equal(x, ref) and b.model_rows == b0.model_rows == rows_per_nfe * 3 * 4
    # an ungated call on the hooked model is untouched by the (inert) hooks
    assert torch.equal(_sample(_proc(pipe, family, 4), [1, 2, 3])[0], ref)


@pytest.mark.parametrize("max_batch", [1, 2])
def test_reproduces_the_reference_package(tiny_pipe, max_batch):
    fx = torch.load(FIXTURE)
    pipe = tiny_pipe("sd15")
    for run in fx["runs"]:
        tg = TGate(run["gate_step"], run["sp_interval"], run["fi_interval"], run["warm_up"])
        outs = {}
        for name, option in (("gated", tg), ("plain", None)):
            proc = DenoisingProcess.from_pipeline(pipe, run["num_steps"], fx["guidance_scale"], height=fx["size"],
                                                  width=fx["size"], max_batch=max_batch).for_call()
            enable_tgate(proc, option)
            proc.reset_particles(2)
            outs[name], _ = proc.sample(fx["latents"].clone(), proc.encode(fx["prompt"]))
        ref = run["latents_out"]
        tol = 1e-5 * ref.abs().max().item() + 1e-5
        assert (outs["gated"] - ref).abs().max().item() <= tol, (outs["gated"] - ref).abs().max()
        assert (outs["plain"] - ref).abs().max().item() > 100 * tol  # guard: the check can fail


# ------------------------------------------------------------------------- what the model sees
def test_after_the_gate_cfg_is_off_and_the_model_cost_drops(tiny_pipe):
    pipe = tiny_pipe("sd15")
    proc = _proc(pipe, "sd15", 5, TGate(3, 1, 1, 0))
    b, no_cfg = metered_steps(proc, PROMPT, 5)
    assert no_cfg == [i >= 3 for i in range(5)]
    assert b.nfe == 10 and b.model_rows == 2 * (2 * 3 + 2)


def test_sdxl_after_the_gate_sees_the_negative_added_conditioning():
    pipe = make_tiny_pipeline("sdxl")
    seen = []
    pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0].shape[0], kw["added_cond_kwargs"])),
                                        with_kwargs=True)
    proc = _proc(pipe, "sdxl", 4, TGate(2, 1, 1, 0))
    cond = proc.encode(PROMPT, "blurry")
    x = proc.noise_from_seeds([1, 2])
    for i in range(4):
        x = proc.step(x, i, proc.denoise(x, i, cond))
    assert [rows for rows, _ in seen] == [4, 4, 2, 2]
    for rows, added in seen[2:]:
        assert torch.equal(added["text_embeds"], cond.uncond["text_embeds"].expand(2, -1))
        assert torch.equal(added["time_ids"], cond.uncond["time_ids"].expand(2, -1))
    assert not torch.equal(cond.uncond["text_embeds"], cond.cond["text_embeds"])


class CountingProcessor:
    """A custom attention processor (as IP-Adapter / LoRA / xformers would install): T-GATE
    must delegate to it, not replace it."""

    def __init__(self, log, name):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner, self.log, self.name = AttnProcessor2_0(), log, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        self.log.append((self.name, encoder_hidden_states is not None))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kw)


@pytest.mark.parametrize("family", ["sd15", "pixart_sigma"])
def test_delegates_to_the_installed_processor_and_skips_cached_cross_attention(family):
    pipe = make_tiny_pipeline(family)
    model = pipe.unet if family == "sd15" else pipe.transformer
    log = []
    procs = {name: CountingProcessor(log, name) for name in model.attn_processors}
    n_cross, n_all = sum(1 for n in procs if "attn2" in n), len(procs)
    model.set_attn_processor(dict(procs))
    steps, tg = 7, TGate(5, 3, 2, 1)
    _sample(_proc(pipe, family, steps), [1])
    plain = list(log)
    assert sum(c for _, c in plain) == n_cross * steps
    log.clear()
    _sample(_proc(pipe, family, steps, tg), [1])
    # cross-attention runs (through the installed processor) only up to the gate step (4);
    # self-attention is skipped at the planned reuse steps 2 (sp 3) and 5 (fi 2)
    assert sum(c for _, c in log) == n_cross * 5
    n_self = n_all - n_cross
    sa_computed = sum(1 for s in range(steps) if tg.plan(s)[1] != REUSE)
    assert sa_computed == steps - 2 and sum(1 for _, c in log if not c) == n_self * sa_computed
    assert all(isinstance(p, CountingProcessor) for p in model.attn_processors.values())


def test_default_model_gates():
    """The embedded shapes model (PixArt-style DiT with cross-attention) runs gated."""
    from tts_diffusion.paths import default_model_path

    if not (default_model_path() / "model_index.json").exists():
        pytest.skip("embedded model missing")
    tts = TTSPipeline.from_pretrained()
    tts.set_progress_bar_config(disable=True)
    r0 = tts("a photo of a red circle", verifier="oracle", budget=20 * 2, seed=0, progress=False)
    r1 = tts("a photo of a red circle", verifier="oracle", budget=20 * 2, seed=0, progress=False, tgate=10)
    r2 = tts("a photo of a red circle", verifier="oracle", budget=20 * 2, seed=0, progress=False, tgate=20)
    assert r0.model_rows == 2 * 2 * 20 and r1.model_rows == 2 * (2 * 10 + 10)
    assert r2.model_rows == r0.model_rows and r2.scores == r0.scores
    assert r1.settings["tgate"] == {"gate_step": 10, "sp_interval": 5, "fi_interval": 1, "warm_up": 2}


# ------------------------------------------------------------------------- refusals
def test_a_model_without_cross_attention_is_refused():
    from diffusers import UNet2DModel

    with pytest.raises(TTSInputError, match="cross-attention or a joint text stream .* has neither"):
        model_kind(UNet2DModel(sample_size=8, block_out_channels=(32, 32), norm_num_groups=32,
                               down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D")))


@pytest.mark.parametrize("value,message", [
    (0, "gate_step=0"), (-3, "gate_step=-3"), ({"gate_step": 5, "sp_interval": 0}, "sp_interval=0"),
    ({"gate_step": 5, "fi_interval": 0}, "fi_interval=0"), ({"gate_step": 5, "warm_up": -1}, "warm_up=-1"),
    ({"gate": 5}, "no option 'gate'"), ("ten", "tgate='ten'"), (2.5, "tgate=2.5"),
])
def test_bad_settings_one_clear_error(value, message):
    with pytest.raises(TTSInputError, match=message):
        TGate.parse(value)


def test_fkc_cfg_modes_refuse_tgate(tiny_pipe):
    tts = TTSPipeline(tiny_pipe("sd15"), verifier=BrightnessVerifier())
    for mode in ("cfg", "product"):
        with pytest.raises(TTSInputError, match="T-GATE"):
            tts(PROMPT, searcher="fkc", budget=8, num_inference_steps=4, height=32, width=32, progress=False,
                tgate=2, mode=mode, prompt_2="a blue square")
    r = tts(PROMPT, searcher="fkc", budget=8, num_inference_steps=4, height=32, width=32, progress=False,
            tgate=2, mode="anneal")
    assert r.nfe == 8 and r.model_rows == 2 * (2 * 2 + 2)


def test_cli_tgate(tmp_path):
    from tts_diffusion.cli import main
    from tts_diffusion.verifiers import register_verifier

    register_verifier("brightness", "test-only: mean pixel value")(lambda **kw: BrightnessVerifier())
    model = tmp_path / "m"
    make_tiny_pipeline("sd15").save_pretrained(model)
    base = ["generate", "a red circle", "--model", str(model), "--verifier", "brightness", "--budget", "8",
            "--steps", "4", "--height", "32", "--width", "32", "--quiet"]
    out = tmp_path / "a.png"
    r = CliRunner().invoke(main, [*base, "--tgate", "2", "--tgate-option", "sp_interval=1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["settings"]["tgate"]["gate_step"] == 2 and side["settings"]["tgate"]["sp_interval"] == 1
    assert side["nfe"] == 8 and side["model_rows"] == 2 * (2 * 2 + 2)
    for extra, message in ((["--tgate", "0"], "gate_step=0"), (["--tgate", "2", "--tgate-option", "fi_interval=0"],
                                                               "fi_interval=0"),
                           (["--tgate-option", "sp_interval=2"], "needs --tgate")):
        r = CliRunner().invoke(main, [*base, *extra, "--out", str(tmp_path / "b.png")])
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.stderr


# ------------------------------------------------------------------------- sharing
def test_one_pipeline_serves_gated_and_ungated_calls_from_threads(tiny_pipe):
    tts = TTSPipeline(tiny_pipe("sd15"), verifier=BrightnessVerifier())
    kw = dict(budget=12, num_inference_steps=4, height=32, width=32, progress=False)
    solo = {g: tts(PROMPT, seed=5, tgate=g, **kw).scores for g in (None, 2)}
    got, errors = {}, []

    def work(g, k):
        try:
            got[(g, k)] = tts(PROMPT, seed=5, tgate=g, **kw).scores
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(g, k)) for k in range(2) for g in (None, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (g, _), scores in got.items():
        assert scores == pytest.approx(solo[g], abs=1e-6)
    assert solo[None] != solo[2]


def test_each_call_view_gets_its_own_caches(tiny_pipe):
    base = DenoisingProcess.from_pipeline(tiny_pipe("sd15"), 4, 5.0, height=32, width=32)
    enable_tgate(base, 2)
    a, b = base.for_call(), base.for_call()
    assert active_tgate(a) == active_tgate(b) == TGate(2)
    assert a.call.get("tgate") is not b.call.get("tgate") is not base.call.get("tgate")
