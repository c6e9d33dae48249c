"""One declaration per searcher and verifier: for every built-in one, the defaults that
`tts-diffusion list --json` prints, the ones the searcher function (the verifier factory)
runs with and the ones the sidecar records are the same objects."""
from __future__ import annotations

import inspect
import json

import pytest
from click.testing import CliRunner

from tts_diffusion.cli import main
from tts_diffusion.paths import default_model_path
from tts_diffusion.request import SearchRequest
from tts_diffusion.searchers import available_searchers, load_searcher, min_budget, searcher_params
from tts_diffusion.searchers.registry import BUILTIN as BUILTIN_SEARCHERS
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.verifiers import registry as vreg

pytestmark = pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(),
                                reason="embedded shapes model missing")

SEARCHERS = sorted(entry.name for entry, _ in BUILTIN_SEARCHERS)
VERIFIERS = sorted(entry.name for entry, _ in vreg.BUILTIN)
PROMPT = "a photo of a red circle"
#: a short grid, so every searcher's minimum budget is small
STEPS = 4


def _listed(kind: str, name: str) -> dict:
    """The declaration `tts-diffusion list --KIND NAME --json` prints."""
    r = CliRunner().invoke(main, ["list", f"--{kind}", name, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)[kind]


@pytest.fixture(scope="module")
def tts():
    from tts_diffusion import TTSPipeline

    tts = TTSPipeline.from_pretrained()
    tts.set_progress_bar_config(disable=True)
    return tts


def _sidecar(result) -> dict:
    from tts_diffusion.records.provenance import dumps_strict

    return json.loads(dumps_strict(result.sidecar()))


def test_every_builtin_is_walked():
    assert set(SEARCHERS) == {e.name for e, _ in BUILTIN_SEARCHERS} and set(SEARCHERS) <= set(available_searchers())
    assert len(SEARCHERS) == 14 and len(VERIFIERS) == 6


@pytest.mark.parametrize("name", SEARCHERS)
def test_searcher_defaults_listed_run_and_recorded_are_the_declared_ones(name, tts, monkeypatch):
    spec = searcher_params(name)
    listed = {o["name"]: o["default"] for o in _listed("searcher", name)["options"]}
    assert list(listed) == spec.names()
    # the function repeats no default: it can only run with what the registry hands it
    search = load_searcher(name)
    signature = inspect.signature(search.__wrapped__).parameters.values()
    assert not [p.name for p in signature if p.default is not inspect.Parameter.empty]
    received: dict = {}
    real = search.__wrapped__

    def spy(*args, **kwargs):
        received.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "__wrapped__", spy)
    budget = min_budget(name, STEPS)
    # a search that follows the verifier's gradient (noise_opt, driftlite's default tilt) gets the domain CLIP
    verifier = "clip" if search.entry.needs_gradient or name == "driftlite" else None
    result = tts.run(SearchRequest(PROMPT, searcher=name, num_inference_steps=STEPS, budget=budget, guidance_scale=2.0,
                                   verifier=verifier), progress=False)
    ran_with = {k: v for k, v in received.items() if k != "negative_prompt"}
    assert all(ran_with[p.name] is p.default for p in spec)  # the declared objects themselves
    recorded = _sidecar(result)["run"]["searcher_options"]
    assert ran_with == recorded == listed == spec.defaults()
    assert all(result.settings[k] == v for k, v in listed.items() if v is not None)  # settings, by name


@pytest.mark.parametrize("name", VERIFIERS)
def test_verifier_defaults_listed_built_with_and_recorded_are_the_declared_ones(name, tts, monkeypatch):
    spec = vreg.verifier_params(name)
    listed = {o["name"]: o["default"] for o in _listed("verifier", name)["options"]}
    assert list(listed) == spec.names()
    declared = {k: v for k, v in listed.items() if v is not None}  # null: derived by the verifier
    built_with: dict = {}

    def factory(**options):
        built_with.update(options)
        return BrightnessVerifier()

    vreg.verifier_factory(name)  # its module imported, then its factory replaced by the spy
    monkeypatch.setattr(vreg._REGISTRY[name], "implementation", factory)
    monkeypatch.setattr(tts, "_verifiers", {})  # a fresh verifier cache
    result = tts.run(SearchRequest(PROMPT, verifier=name, num_inference_steps=STEPS, budget=STEPS), progress=False)
    assert all(built_with[k] is spec.get(k).default for k in declared)  # the declared objects themselves
    assert {k: built_with[k] for k in declared} == declared
    assert _sidecar(result)["run"]["verifier_options"] == declared
