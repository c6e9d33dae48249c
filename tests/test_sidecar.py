"""Sidecars rerun their search: versions, model and verifier weights with sha256, every
setting, the command line, strict JSON; `tts-diffusion replay` reproduces the pixels."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tts_diffusion.cli import main
from tts_diffusion.records.provenance import dumps_strict, weights_sha256
from tts_diffusion.paths import default_model_path


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One search with the embedded model from a plain prompt (two samples of 20 steps)."""
    out = tmp_path_factory.mktemp("gen") / "two.png"
    r = _cli("generate", "2 Red circles!", "--budget", "40", "--seed", "5", "--device", "cpu", "--out", str(out),
             "--quiet", "--threads", "1")
    assert r.exit_code == 0, (r.output, r.exception)
    return out, json.loads(out.with_suffix(".json").read_text())


def test_sidecar_records_what_reruns_the_search(generated):
    out, side = generated
    assert side["prompt"] == "a photo of two red circles"  # canonical: what the model was given
    assert side["run"]["prompt"] == "2 Red circles!" and side["settings"]["prompt_given"] == "2 Red circles!"
    assert set(side["versions"]) >= {"tts-diffusion", "torch", "diffusers", "transformers", "open_clip", "python"}
    assert side["versions"]["torch"] and side["versions"]["diffusers"]
    assert side["model"]["source"] is None and side["model"]["path"] == str(default_model_path().resolve())
    assert side["model"]["sha256"] == weights_sha256(default_model_path()) and len(side["model"]["sha256"]) == 64
    assert side["verifier"]["name"] == "oracle" and side["verifier"]["weights"] == {}
    run = side["run"]
    assert run["searcher"] == "best_of_n" and run["budget"] == 40 and run["seed"] == 5
    assert run["num_inference_steps"] == 20 and run["guidance_scale"] == 4.5 and side["settings"]["dtype"] == "float32"
    assert "keep_images" in run["searcher_options"]  # defaults filled in
    assert side["command_line"] == ["tts-diffusion", "generate", "2 Red circles!", "--budget", "40", "--seed", "5", "--device", "cpu",
                                        "--out", str(out), "--quiet", "--threads", "1"]
    assert side["image"] == out.name and side["sidecar_version"] == 2


def test_replay_reproduces_the_image_exactly(generated, tmp_path):
    out, side = generated
    again = tmp_path / "again.png"
    r = _cli("replay", str(out.with_suffix(".json")), "--out", str(again), "--quiet", "--threads", "1")
    assert r.exit_code == 0, (r.output, r.exception)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    side2 = json.loads(again.with_suffix(".json").read_text())
    assert side2["best"] == side["best"] and side2["run"] == side["run"]


def test_replay_reads_a_version_1_sidecar(generated, tmp_path):
    """Version 1 recorded the dtype and device inside `run`; replay still reads it."""
    out, side = generated
    old = dict(side, sidecar_version=1, run={**side["run"], "dtype": side["settings"]["dtype"],
                                             "device": side["settings"]["device"]})
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    r = _cli("replay", str(path), "--out", str(tmp_path / "old-again.png"), "--quiet", "--threads", "1")
    assert r.exit_code == 0, (r.output, r.exception)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "old-again.png")))


def test_replay_refuses_other_weights_clearly(generated, tmp_path):
    out, side = generated
    forged = dict(side, model={**side["model"], "sha256": "0" * 64})
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    r = _cli("replay", str(path), "--out", str(tmp_path / "x.png"), "--quiet")
    assert r.exit_code == 2 and not (tmp_path / "x.png").exists()
    assert "weights sha256" in r.stderr and "--allow-other-weights" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    ('{"prompt": "x"}', "no 'run' section"),
])
def test_replay_rejects_files_that_are_not_sidecars(tmp_path, content, message):
    path = tmp_path / "s.json"
    path.write_text(content)
    r = _cli("replay", str(path))
    assert r.exit_code == 2 and message in r.stderr and r.stderr.startswith("error: ")


def test_strict_json_has_no_nan_or_infinity_tokens():
    text = dumps_strict({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -math.inf}, "e": 2.5})
    def no_constants(token):
        raise AssertionError(f"non-standard JSON token {token}")

    back = json.loads(text, parse_constant=no_constants)  # NaN / Infinity / -Infinity would call it
    assert back["a"] is None and back["b"] == [1.0, None] and back["c"]["d"] is None and back["e"] == 2.5
    assert back["non_finite"]["paths"] == ["$.a=nan", "$.b[1]=inf", "$.c.d=-inf"]


def test_weights_hash_is_sha256_over_the_weight_files_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "m"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "w.safetensors").write_bytes(b"abc")
    (model / "x.bin").write_bytes(b"xyz")
    (model / "config.json").write_text("{}")  # not a weight file
    want = hashlib.sha256()
    for rel, data in (("unet/w.safetensors", b"abc"), ("x.bin", b"xyz")):
        want.update(rel.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    assert weights_sha256(model) == want.hexdigest()
    assert (tmp_path / "cache" / "tts-diffusion" / "weights_sha256.json").is_file()
    (model / "x.bin").write_bytes(b"xyzw")  # new bytes (new size/mtime key): a new hash
    assert weights_sha256(model) != want.hexdigest()
    assert weights_sha256(tmp_path / "nothing") is None


def test_request_fills_in_the_declared_defaults():
    from tts_diffusion.request import SearchRequest
    from tts_diffusion.searchers import searcher_params

    filled = SearchRequest("a red circle", searcher_options={"keep_images": 3}).check().searcher_options
    assert filled == {**searcher_params("best_of_n").defaults(), "keep_images": 3}


def test_sidecar_hashes_the_verifier_weights_it_was_pointed_at(tmp_path, monkeypatch):
    """A verifier option that names local weights (the domain CLIP for `clip` on the embedded
    model) is recorded with its path and sha256; a hub tag is recorded as given."""
    import torch

    from tts_diffusion.records.result import Candidate, SearchResult
    from tts_diffusion.paths import domain_clip_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    best = Candidate(score=float("nan"), nfe=4, seed=1, image=torch.zeros(3, 4, 4, dtype=torch.uint8))
    res = SearchResult("a photo of a circle", best, [best], [], 4, 1, {}, {}, provenance={
        "model_source": None,
        "verifier": {"name": "clip", "options": {"model": str(domain_clip_path()), "pretrained": "openai"}},
        "run": {"prompt": "circle"}})
    image, sidecar = res.save(tmp_path / "r.png", command_line=["tts-diffusion", "generate", "circle"])
    side = json.loads(sidecar.read_text())
    weights = side["verifier"]["weights"]
    assert set(weights) == {"model"} and weights["model"]["sha256"] == weights_sha256(domain_clip_path())
    assert side["verifier"]["options"]["pretrained"] == "openai"
    assert side["best"]["score"] is None and side["command_line"] == ["tts-diffusion", "generate", "circle"]
