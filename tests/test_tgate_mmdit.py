"""T-GATE on MM-DiT models (features/tgate_mmdit.py): SD3, SD3.5 (dual attention, q/k RMS norm), FLUX.

Exactness of the block rewrite: with the hooks on, a model call at the gate step (text k / v
cached) followed by a call after the gate on the *same* inputs must give the ungated output,
since the cached text k / v are exactly those the second call would have computed. Tolerance:
max |gated - plain| <= 1e-5 * max |plain| + 1e-5 (float32, CPU; only the order of float
operations differs). Guard tests break the rotary rows / the q-k norms on purpose and see
the check fail, so it catches a wrong concatenation order, RoPE or norm.
"""
import pytest
import torch

from tts_diffusion import TGate, TTSInputError
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.features import tgate, tgate_mmdit
from tts_diffusion.features.tgate import TGateState, enable_tgate
from tts_diffusion.testing.helpers import metered_steps
from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline, pipeline_call_kwargs

PROMPT = "a red circle"


# ------------------------------------------------------------------------- tiny transformers
def _sd3(dual: bool = False):
    """A tiny SD3 transformer: 3 joint blocks (the last `context_pre_only`); dual=True is
    SD3.5-shaped: q/k RMS norm and a second, image-only attention in the first two blocks."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    extra = dict(qk_norm="rms_norm", dual_attention_layers=(0, 1)) if dual else {}
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=12,
                                  caption_projection_dim=16, pooled_projection_dim=6, pos_embed_max_size=8, **extra)
    b = 2
    inputs = dict(hidden_states=torch.randn(b, 4, 8, 8), encoder_hidden_states=torch.randn(b, 5, 12),
                  pooled_projections=torch.randn(b, 6), timestep=torch.tensor([500.0] * b), return_dict=False)
    return model.eval(), inputs


def _flux():
    """A tiny FLUX transformer: 2 two-stream and 2 one-stream blocks, non-zero text positions
    (so a text key rotated with the wrong rows of the rotary table shows)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=16,
                                   num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=6,
                                   guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    b, n_img, n_txt = 2, 16, 5
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 3)
    txt_ids = torch.randint(0, 7, (n_txt, 3)).float()
    inputs = dict(hidden_states=torch.randn(b, n_img, 8), encoder_hidden_states=torch.randn(b, n_txt, 12),
                  pooled_projections=torch.randn(b, 6), timestep=torch.tensor([0.5] * b),
                  guidance=torch.tensor([3.5] * b), txt_ids=txt_ids, img_ids=img_ids, return_dict=False)
    return model.eval(), inputs


MODELS = {"sd3": _sd3, "sd3.5": lambda: _sd3(dual=True), "flux": _flux}


def _gated_calls(model, inputs, text_after=None):
    """(ungated, at the gate, after the gate) outputs of `model` on `inputs`; after the gate
    optionally with other text inputs (`text_after`)."""
    tgate.install(model)
    with torch.no_grad():
        plain = model(**inputs)[0]
        b = inputs["hidden_states"].shape[0]
        state = TGateState(TGate(gate_step=2), tgate.MMDIT)
        state.reset(b)
        with state.frame(1, slice(0, b), 1):  # g - 1: computed as usual, text k / v cached
            at_gate = model(**inputs)[0]
        with state.frame(2, slice(0, b), 1):  # after the gate: image stream only
            after = model(**{**inputs, **(text_after or {})})[0]
    return plain, at_gate, after, state


def _err(a, b):
    return (a - b).abs().max().item(), 1e-5 * b.abs().max().item() + 1e-5


# ------------------------------------------------------------------------- the block rewrite
@pytest.mark.parametrize("name", list(MODELS))
def test_image_only_path_with_cached_text_equals_the_original_blocks(name):
    model, inputs = MODELS[name]()
    blocks = tgate_mmdit.joint_blocks(model)
    kinds = [k for _, _, k in blocks]
    assert kinds == (["dual"] * 3 if name.startswith("sd3") else ["dual", "dual", "single", "single"])
    plain, at_gate, after, state = _gated_calls(model, inputs)
    assert torch.equal(at_gate, plain)  # caching at the gate does not change its output
    assert {key for key, _ in state.store} == {n for n, _, _ in blocks}
    err, tol = _err(after, plain)
    assert err <= tol, (name, err, tol)
    # after the gate the text stream is frozen: other text inputs change nothing
    other = {"encoder_hidden_states": torch.randn_like(inputs["encoder_hidden_states"])}
    _, _, after_other, _ = _gated_calls(model, inputs, other)
    assert torch.equal(after_other, after)
    assert _err(model(**{**inputs, **other})[0], plain)[0] > 100 * tol  # the text does matter ungated


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_blocks_equal_the_eager_ones_in_three_graphs(name):
    """Under torch.compile (aot_eager, counting) the hooks read only the frame: the plain,
    gate and after-gate calls compile one graph each, none breaks, and every output is the
    eager one (the after-gate call rewrites the blocks, so its RoPE rows and concatenation
    order are checked compiled too: an `inspect` read inside the graph once rotated FLUX's
    text keys with the image rows, 0.04 off at max |out| 2)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    model, inputs = MODELS[name]()
    eager = _gated_calls(model, inputs)[:3]
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")
    model.compile(backend=backend, dynamic=False)
    compiled = _gated_calls(model, inputs)[:3]
    assert backend.frame_count == 3, backend.frame_count
    assert not counters["graph_break"], dict(counters["graph_break"])
    for e, c in zip(eager, compiled):
        err, tol = _err(c, e)
        assert err <= tol, (name, err, tol)


def test_guard_wrong_rotary_rows_are_caught(monkeypatch):
    """Swapping the concatenation order on FLUX rotates text and image keys with the wrong
    rows of the rotary table: the exactness check must fail."""
    model, inputs = _flux()
    monkeypatch.setattr(tgate_mmdit, "_text_first", lambda block, kind: False)
    plain, _, after, _ = _gated_calls(model, inputs)
    err, tol = _err(after, plain)
    assert err > 100 * tol, err


def test_guard_a_missing_qk_norm_is_caught(monkeypatch):
    model, inputs = _sd3(dual=True)
    monkeypatch.setattr(tgate_mmdit, "_norm", lambda norm, x: x)
    plain, _, after, _ = _gated_calls(model, inputs)
    err, tol = _err(after, plain)
    assert err > 100 * tol, err


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_the_gate_caches_the_average_of_the_cfg_halves(name):
    """Rows [uncond; cond] at the gate: the cache holds (k_uncond + k_cond) / 2 per particle."""
    model, inputs = MODELS[name]()
    tgate.install(model)
    (block_name, block, kind), = tgate_mmdit.joint_blocks(model)[:1]
    seen = {}
    h = block.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    state = TGateState(TGate(gate_step=2), tgate.MMDIT)
    state.reset(1)
    with torch.no_grad(), state.frame(1, slice(0, 1), 2):  # one particle: the batch of 2 is its CFG pair
        model(**inputs)
    h.remove()
    k, v = tgate_mmdit.text_kv(block, kind, seen["hidden_states"], seen["encoder_hidden_states"], seen["temb"],
                               seen.get("image_rotary_emb"))
    cached_k, _ = state.store[(block_name, "text_k")]
    cached_v, _ = state.store[(block_name, "text_v")]
    assert cached_k.shape[:2] == (1, 1)
    assert torch.allclose(cached_k[0, 0], (k[0] + k[1]) / 2, atol=1e-6)
    assert torch.allclose(cached_v[0, 0], (v[0] + v[1]) / 2, atol=1e-6)


# ------------------------------------------------------------------------- through the process
def _proc(pipe, family, steps, tg=None, max_batch=16):
    kw = pipeline_call_kwargs(family)
    proc = DenoisingProcess.from_pipeline(pipe, steps, 5.0 if family == "sd3" else 3.5, height=kw["height"],
                                          width=kw["width"], max_sequence_length=kw["max_sequence_length"],
                                          max_batch=max_batch).for_call()
    enable_tgate(proc, tg)
    return proc


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_model_rows_and_cfg_after_the_gate(tiny_pipe, family):
    proc = _proc(tiny_pipe(family), family, 5, 3)
    b, no_cfg = metered_steps(proc, PROMPT, 5)
    assert no_cfg == [i >= 3 or family == "flux" for i in range(5)]
    # SD3: CFG rows doubled up to the gate only; FLUX-dev (distilled guidance): one row throughout
    assert b.nfe == 10 and b.model_rows == (2 * (2 * 3 + 2) if family == "sd3" else 10)


def test_delegates_to_the_installed_processors_up_to_the_gate():
    """Before and at the gate the joint attention runs through the installed processor; after
    it, only SD3.5's image-only `attn2` does (the joint attention is computed by the rewrite)."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    log = []

    class Counting(JointAttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, *a, **kw):
            log.append(encoder_hidden_states is not None)
            return super().__call__(attn, hidden_states, encoder_hidden_states, *a, **kw)

    model, inputs = _sd3(dual=True)
    model.set_attn_processor(Counting())
    plain, at_gate, after, _ = _gated_calls(model, inputs)
    # ungated + gate call: 3 joint + 2 attn2 each; after the gate: the 2 attn2 only
    assert log == ([True, False, True, False, True] * 2 + [False, False])
    assert all(isinstance(p, Counting) for p in model.attn_processors.values())


# ------------------------------------------------------------------------- refusals
def test_an_unknown_joint_layout_is_refused_with_one_line():
    from diffusers.models.attention_processor import Attention

    odd = torch.nn.Sequential(Attention(query_dim=8, added_kv_proj_dim=8, heads=2, dim_head=4))
    with pytest.raises(TTSInputError, match="does not know the joint text-stream block layout") as e:
        tgate.model_kind(odd)
    assert "\n" not in str(e.value)


def test_an_ip_adapter_processor_is_refused():
    from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor

    model, _ = _flux()
    model.transformer_blocks[0].attn.set_processor(FluxIPAdapterAttnProcessor(32, 8))
    with pytest.raises(TTSInputError, match="IP-Adapter"):
        tgate.model_kind(model)
