"""Nothing lost at a run's edges (issue 27): image, sidecar and extra files are one unit
(a full disk or a crash leaves an older pair untouched), one writer per output, extra files
never replace unrelated ones and their conflicts are found before the search, `replay`
never writes over its input and refuses a malformed sidecar with one line."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tts_diffusion.cli import main
from tts_diffusion.errors import TTSInputError
from tts_diffusion.pipelines import tts_pipeline
from tts_diffusion.records import files
from tts_diffusion.records.files import OutputLock, OutputUnit
from tts_diffusion.records.result import Candidate, ChainStep, SearchResult


def _result(score=0.5, fill=200):
    img = torch.full((3, 8, 8), fill, dtype=torch.uint8)
    best = Candidate(score=score, nfe=4, seed=1, image=img)
    return SearchResult("a cat", best, [best], [], 4, 1, {}, {"seed": 1})


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _no_load(monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(tts_pipeline, "load_diffusers_pipeline", no_load)


def _one_error(r, message):
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


# ---------------------------------------------------------------- one unit (points 4, 5)
def test_sidecar_records_the_sha256_of_its_image(tmp_path):
    image, side = _result().save(tmp_path / "best.png")
    assert json.loads(side.read_text())["image_sha256"] == _sha(image)


@pytest.mark.parametrize("fail_at", [1, 2])  # 1: the image's fsync, 2: the sidecar's
def test_full_disk_leaves_the_older_pair_untouched(tmp_path, monkeypatch, fail_at):
    """ENOSPC while writing the image or between image and sidecar: the new pair is not
    written at all, the older pair is byte-identical, and no temporary is left."""
    image, side = _result(0.5, fill=10).save(tmp_path / "best.png")
    old = (image.read_bytes(), side.read_bytes())
    calls = []
    real = os.fsync

    def full(fd):
        calls.append(fd)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        _result(0.9, fill=250).save(tmp_path / "best.png")
    assert (image.read_bytes(), side.read_bytes()) == old
    assert _names(tmp_path) == ["best.json", "best.png"]


def test_unit_without_commit_removes_every_temporary(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with OutputUnit() as unit:
            unit.stage(tmp_path / "a.png", lambda f: f.write(b"new"))
            unit.stage_folder(tmp_path / "a_chains", {"x.png": Image.new("RGB", (2, 2))})
            raise KeyboardInterrupt
    assert _names(tmp_path) == ["a.png"] and (tmp_path / "a.png").read_bytes() == b"old"


# ------------------------------------------------------------ one writer (point 4)
def test_busy_output_is_refused_with_one_line(tmp_path):
    """A lock held by another process: save refuses, nothing is written; the lock file
    goes away with its holder."""
    out = tmp_path / "best.png"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tts_diffusion.records.files import OutputLock\n"
        f"l = OutputLock({str(out)!r}).acquire(); print('held', flush=True); sys.stdin.readline(); l.release()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TTSInputError, match="being written by another tts-diffusion run"):
            _result().save(out)
        assert not out.exists() and not out.with_suffix(".json").exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert _names(tmp_path) == []
    _result().save(out)  # free again
    assert _names(tmp_path) == ["best.json", "best.png"]


def test_lock_is_reentrant_within_a_process(tmp_path):
    out = tmp_path / "best.png"
    with OutputLock(out):
        _result().save(out)  # the CLI holds the lock for the run; save takes it again
        assert files.lock_path(out).exists()
    assert _names(tmp_path) == ["best.json", "best.png"]


def test_two_processes_racing_on_one_out_end_with_a_matching_pair(tmp_path):
    """Two real `generate` runs with different seeds on one --out: the second is refused
    while the first holds the output (exit 2, one line), and the pair on disk belongs
    together (the sidecar's image_sha256 is the image's)."""
    out = tmp_path / "best.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}

    def start(seed):
        return subprocess.Popen([sys.executable, "-m", "tts_diffusion.cli", "generate", "a photo of a red circle",
                                 "--device", "cpu", "--budget", "40", "--seed", str(seed), "--out", str(out),
                                 "--quiet", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    first = start(1)
    deadline = time.time() + 120
    while not files.lock_path(out).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = start(2)
    err2 = second.communicate(timeout=300)[1]
    err1 = first.communicate(timeout=300)[1]
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "being written by another tts-diffusion run" in err2, err2
    assert len(err2.strip().splitlines()) == 1
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["image_sha256"] == _sha(out) and side["run"]["seed"] == 1
    assert _names(tmp_path) == ["best.json", "best.png"]


# --------------------------------------------------- extras never clobbered (points 6, 7)
def _rgba_result():
    res = _result()
    res.alpha = torch.full((8, 8), 128, dtype=torch.uint8)
    return res


@pytest.mark.parametrize("extra", ["cut.rgb.png", "cut.alpha.png"])
def test_rgba_never_overwrites_unrelated_files(tmp_path, extra):
    (tmp_path / extra).write_bytes(b"user data")
    with pytest.raises(TTSInputError, match="did not write"):
        _rgba_result().save(tmp_path / "cut.png")
    assert _names(tmp_path) == [extra] and (tmp_path / extra).read_bytes() == b"user data"


def test_rgba_replaces_its_own_extras(tmp_path):
    _rgba_result().save(tmp_path / "cut.png")
    _rgba_result().save(tmp_path / "cut.png")  # its own files, listed by its sidecar: replaced
    assert _names(tmp_path) == ["cut.alpha.png", "cut.json", "cut.png", "cut.rgb.png"]


def _chain_result():
    res = _result()
    res.chains = [[ChainStep(0, 0, 0.5, 4, "a cat", image=torch.zeros(3, 8, 8, dtype=torch.uint8))]]
    return res


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_chains_folder_never_replaces_an_unrelated_one(tmp_path, kind):
    target = tmp_path / "best_chains"
    if kind == "file":
        target.write_text("user data")
    else:
        target.mkdir()
        (target / "mine.txt").write_text("user data")
    with pytest.raises(TTSInputError, match="did not write"):
        _chain_result().save(tmp_path / "best.png")
    assert _names(tmp_path) == ["best_chains"]
    _chain_result().save(tmp_path / "other.png")
    _chain_result().save(tmp_path / "other.png")  # its own folder: replaced whole
    assert _names(tmp_path / "other_chains") == ["chain0_round0.png"]


@pytest.mark.parametrize("flags,existing", [(["--rgba"], "best.rgb.png"), (["--rgba"], "best.alpha.png"),
                                            (["--searcher", "reflect"], "best_chains")])
def test_cli_finds_extra_conflicts_before_the_model_loads(tmp_path, monkeypatch, flags, existing):
    (tmp_path / existing).write_text("user data")
    _no_load(monkeypatch)
    r = CliRunner().invoke(main, ["generate", "a photo of a red circle", *flags, "--device", "cpu",
                                  "--out", str(tmp_path / "best.png"), "--quiet"])
    _one_error(r, "did not write")
    assert _names(tmp_path) == [existing]


# ------------------------------------------------------ replay keeps its input (point 8)
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "s.png"
    r = CliRunner().invoke(main, ["generate", "a photo of a red circle", "--budget", "20", "--seed", "3", "--device",
                                  "cpu", "--out", str(out), "--quiet", "--threads", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    return out


@pytest.mark.parametrize("target", ["s.png", "s.jpg"])
def test_replay_never_writes_over_its_input(generated, monkeypatch, target):
    side = generated.with_suffix(".json")
    before = (side.read_bytes(), generated.read_bytes())
    _no_load(monkeypatch)
    r = CliRunner().invoke(main, ["replay", str(side), "--out", str(generated.with_name(target)), "--quiet"])
    _one_error(r, "would overwrite its input")
    assert (side.read_bytes(), generated.read_bytes()) == before


def test_replay_default_out_never_replaces_an_unrelated_image(generated, monkeypatch):
    unrelated = generated.with_name("s-replay.png")
    unrelated.write_bytes(b"user data")
    try:
        _no_load(monkeypatch)
        r = CliRunner().invoke(main, ["replay", str(generated.with_suffix(".json")), "--quiet"])
        _one_error(r, "no tts-diffusion sidecar pairs with it")
        assert unrelated.read_bytes() == b"user data"
    finally:
        unrelated.unlink()


# ------------------------------------------------ replay validates the sidecar (point 10)
def _edit(run=None, drop=(), **top):
    def apply(side):
        side = json.loads(json.dumps(side))
        side["run"].update(run or {})
        for key in drop:
            side["run"].pop(key)
        side.update(top)
        return side
    return apply


MALFORMED = [
    ("no-prompt", _edit(drop=["prompt"]), "run.prompt is missing"),
    ("no-budget", _edit(drop=["budget"]), "run.budget is missing"),
    ("budget-string", _edit({"budget": "20"}), "run.budget must be an integer NFE budget >= 1, got '20'"),
    ("budget-bool", _edit({"budget": True}), "run.budget must be an integer"),
    ("budget-zero", _edit({"budget": 0}), "budget must be at least 1"),
    ("prompt-number", _edit({"prompt": 7}), "run.prompt must be a non-empty string"),
    ("seed-float", _edit({"seed": 1.5}), "run.seed must be an integer seed"),
    ("options-list", _edit({"searcher_options": [1]}), "run.searcher_options must be an object"),
    ("unknown-option", _edit({"searcher_options": {"colour": 1}}), "colour"),
    ("unknown-run-field", _edit({"colour": "red"}), "run has unknown field(s) colour"),
    ("rgba-string", _edit({"rgba": "yes"}), "run.rgba must be true or false"),
    ("run-string", lambda s: {**s, "run": "x"}, "run must be an object"),
    ("settings-list", _edit(settings=[1]), "settings must be an object"),
    ("dtype-bogus", lambda s: {**s, "settings": {**s["settings"], "dtype": "float64"}}, "settings.dtype must be one of"),
    ("device-number", lambda s: {**s, "settings": {**s["settings"], "device": 5}}, "settings.device must be"),
    ("model-sha-number", lambda s: {**s, "model": {**s["model"], "sha256": 5}}, "model.sha256 must be"),
    ("version-bogus", _edit(sidecar_version="two"), "sidecar_version 'two'"),
]


@pytest.mark.parametrize("name,edit,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_replay_names_the_bad_field_in_one_line(generated, tmp_path, monkeypatch, name, edit, message):
    side = edit(json.loads(generated.with_suffix(".json").read_text()))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(side))
    _no_load(monkeypatch)
    r = CliRunner().invoke(main, ["replay", str(path), "--out", str(tmp_path / "again.png"), "--quiet"])
    _one_error(r, message)
    assert _names(tmp_path) == ["bad.json"]


@pytest.mark.parametrize("encoding,message", [("utf-16", "is not UTF-8 text"), ("latin-1", "is not UTF-8 text"),
                                              ("utf-8-sig", None)])
def test_replay_reads_utf8_only_and_says_so(generated, tmp_path, monkeypatch, encoding, message):
    side = json.loads(generated.with_suffix(".json").read_text())
    side["run"]["negative_prompt"] = "café"
    path = tmp_path / "enc.json"
    path.write_bytes(json.dumps(side, ensure_ascii=False).encode(encoding))
    _no_load(monkeypatch)
    r = CliRunner().invoke(main, ["replay", str(path), "--out", str(tmp_path / "again.png"), "--quiet"])
    if message is None:  # a byte-order mark is fine: the checks pass and the model load is reached
        assert isinstance(r.exception, AssertionError) and "model was loaded" in str(r.exception)
    else:
        _one_error(r, message)


# ----------------------------------------------- never silent (point 9's neighbours)
def test_fkc_second_prompt_is_checked_against_the_model_grammar():
    from tts_diffusion.request import SearchRequest

    req = SearchRequest("a photo of a red circle", searcher="fkc",
                        searcher_options={"mode": "product", "prompt_2": "a purple dragon"})
    with pytest.raises(TTSInputError, match="fkc option prompt_2: .*dragon"):
        req.check(embedded_model=True)
    with pytest.raises(TTSInputError, match="fkc option prompt_2 contains the control character"):
        SearchRequest("a red circle", searcher="fkc", searcher_options={"prompt_2": "a\x00b"}).check()
    ok = SearchRequest("a photo of a red circle", searcher="fkc",
                       searcher_options={"mode": "product", "prompt_2": "a photo of a blue square"})
    assert ok.check(embedded_model=True).searcher_options["prompt_2"] == "a photo of a blue square"


@pytest.mark.parametrize("kwargs,message", [({"rgba": 1}, "rgba must be True or False"),
                                            ({"rgba": "no"}, "rgba must be True or False"),
                                            ({"progress": "yes"}, "progress must be True or False"),
                                            ({"return_dict": 0}, "return_dict must be True or False")])
def test_api_flags_are_booleans(kwargs, message):
    from tts_diffusion import TTSPipeline
    from tts_diffusion.testing.helpers import BrightnessVerifier
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    tts = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())
    with pytest.raises(TTSInputError, match=message):
        tts("a red circle", budget=4, num_inference_steps=2, height=32, width=32, **{"progress": False, **kwargs})


@pytest.mark.parametrize("option,message", [("reward_scale=1e300", "reward_scale=1e+300 is too large"),
                                            ("eta=1e7", "eta=10000000.0 is too large"),
                                            ("num_particles=" + str(2**70), "is too large")])
def test_every_numeric_option_has_an_upper_bound(tmp_path, monkeypatch, option, message):
    _no_load(monkeypatch)
    r = CliRunner().invoke(main, ["generate", "a photo of a red circle", "--searcher", "smc", "-o", option,
                                  "--out", str(tmp_path / "b.png")])
    _one_error(r, message)


def test_replay_knows_every_field_a_request_records():
    """A field added to SearchRequest must be known to replay's sidecar check (else every new
    sidecar would be refused as having an unknown field)."""
    import dataclasses

    from tts_diffusion.records.sidecar_check import RUN_FIELDS
    from tts_diffusion.request import SearchRequest

    assert set(RUN_FIELDS) == {f.name for f in dataclasses.fields(SearchRequest)}
