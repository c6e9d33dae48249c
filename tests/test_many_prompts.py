"""`tts-diffusion generate` with several prompts or --prompts FILE: the model loads once, each
prompt's image and sidecar are what a one-prompt run with the same flags writes, bad lines are
refused (with their line number) before any model work, done prompts are skipped, and what is
written stays when a later prompt is interrupted."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tts_diffusion.cli import main
from tts_diffusion.errors import TTSInputError
from tts_diffusion.prompt_list import output_stem, read_prompts_file, slug

#: the embedded model, 4 steps, two samples a prompt: a few seconds a search on a CPU
FAST = ["--steps", "4", "--budget", "8", "--device", "cpu", "--threads", "1", "--quiet"]
#: what differs between a file written by a list run and by a one-prompt run
RUN_SPECIFIC = ("image", "command_line", "timings")


def _run(*args):
    return CliRunner().invoke(main, ["generate", *args], catch_exceptions=False)


def _record(path):
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in RUN_SPECIFIC}


def test_slug_and_names_are_stable():
    assert slug("Two red circles!") == "two-red-circles"
    assert slug("a star to the LEFT of a square") == "a-star-to-the-left-of-a-square"
    assert slug("???") == "prompt"
    assert len(slug("word " * 40)) <= 48 and slug("word " * 40).startswith("word-word")
    assert output_stem(3, "two red circles") == "003-two-red-circles"


def test_text_and_json_lines_files(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("# comment\ntwo red circles\n\n  a blue star  \n")
    items = read_prompts_file(text)
    assert [(i.prompt, i.where) for i in items] == [("two red circles", f"{text} line 2"),
                                                   ("a blue star", f"{text} line 4")]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "two red circles", "seed": 4, "options": ["num_samples=2"]}\n\n{"prompt": "a star"}\n')
    items = read_prompts_file(jl)
    assert items[0].overrides == {"seed": 4, "options": ["num_samples=2"]} and items[1].where == f"{jl} line 3"


@pytest.mark.parametrize("lines,message", [
    (['{"prompt": "a star"}', '{"prompt": "a star", "sed": 1}'], "line 2: unknown key 'sed'"),
    (['{"prompt": "a star"}', "a star"], "line 2: not JSON"),
    (['{"prompt": "a star", "seed": true}'], "line 1: 'seed' must be an integer"),
    (['{"prompt": "a star", "options": "n=1"}'], "line 1: 'options' must be a list"),
    (['{"seed": 1}'], "line 1: needs \"prompt\""),
])
def test_bad_lines_name_their_line(tmp_path, lines, message):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(TTSInputError, match=message.replace("(", r"\(")):
        read_prompts_file(f)


def test_bad_line_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """A prompt outside the shapes grammar on line 3 (after a comment and a good line): one
    error line naming the file's line 3, exit 2, nothing loaded and nothing written."""
    from tts_diffusion.pipelines import tts_pipeline

    def no_loading(*a, **k):
        raise AssertionError("the model loaded before the prompts were checked")

    monkeypatch.setattr(tts_pipeline.TTSPipeline, "from_pretrained", no_loading)
    f = tmp_path / "p.txt"
    f.write_text("# shapes\ntwo red circles\na photo of a purple dragon\n")
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["generate", "--prompts", str(f), "--out-dir", str(out), *FAST])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {f} line 3: ") and "purple" in lines[0], r.stderr
    assert not out.exists()
    r = CliRunner().invoke(main, ["generate", "two red circles", "--searcher", "nope", "--out-dir", str(out), *FAST])
    assert r.exit_code == 2 and "prompt 1: unknown searcher 'nope'" in r.stderr


def test_out_and_redo_need_the_right_mode(tmp_path):
    r = CliRunner().invoke(main, ["generate", "a", "b", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "pass --out-dir DIR instead" in r.stderr
    r = CliRunner().invoke(main, ["generate", "--redo", "two red circles"])
    assert r.exit_code == 2 and "--redo goes with --out-dir" in r.stderr
    r = CliRunner().invoke(main, ["generate"])
    assert r.exit_code == 2 and "pass a PROMPT" in r.stderr


def test_each_prompt_equals_a_one_prompt_run(tmp_path):
    """Two prompts on the command line and two JSON Lines ones (one with its own seed and
    budget): each image and sidecar equal those of a one-prompt run with the same flags."""
    jl = tmp_path / "more.jsonl"
    jl.write_text('{"prompt": "a blue star", "seed": 7, "budget": 4}\n{"prompt": "2 green squares"}\n')
    out = tmp_path / "runs"
    r = _run("two red circles", "a red circle above a blue square", "--prompts", str(jl), "--out-dir", str(out),
             "--seed", "5", *FAST)
    assert r.exit_code == 0, r.output + r.stderr
    assert "[4/4] 2 green squares" in r.stderr
    singles = [("two red circles", ["--seed", "5"]), ("a red circle above a blue square", ["--seed", "5"]),
               ("a blue star", ["--seed", "7", "--budget", "4"]), ("2 green squares", ["--seed", "5"])]
    for k, (prompt, extra) in enumerate(singles, 1):
        one = tmp_path / f"one{k}.png"
        flags = list(FAST)
        if "--budget" in extra:  # the line's budget replaces the command's
            i = flags.index("--budget")
            flags = flags[:i] + flags[i + 2:]
        r = _run(prompt, "--out", str(one), *flags, *extra)
        assert r.exit_code == 0, r.output + r.stderr
        listed = out / f"{output_stem(k, prompt)}.png"
        assert listed.read_bytes() == one.read_bytes(), prompt
        assert _record(listed.with_suffix(".json")) == _record(one.with_suffix(".json")), prompt
    assert json.loads((out / "003-a-blue-star.json").read_text())["nfe"] == 4


def test_resume_skips_done_prompts_and_redo_reruns(tmp_path):
    out = tmp_path / "runs"
    args = ["two red circles", "a blue star", "--out-dir", str(out), *FAST]
    assert _run(*args).exit_code == 0
    first, second = out / "001-two-red-circles.json", out / "002-a-blue-star.json"
    stamps = {p: p.stat().st_mtime_ns for p in (first, second)}
    r = _run(*args)
    assert r.exit_code == 0 and "2 of 2 prompts already done" in r.stderr and "[1/2]" not in r.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a sidecar marked interrupted is not done: only that prompt runs again
    record = json.loads(second.read_text())
    second.write_text(json.dumps({**record, "interrupted": True}))
    r = _run(*args)
    assert r.exit_code == 0 and "1 of 2 prompts already done" in r.stderr and "[2/2] a blue star" in r.stderr
    assert first.stat().st_mtime_ns == stamps[first] and "interrupted" not in json.loads(second.read_text())
    r = _run(*args, "--redo")
    assert r.exit_code == 0 and "[1/2]" in r.stderr and "[2/2]" in r.stderr
    assert first.stat().st_mtime_ns != stamps[first]


def test_ctrl_c_keeps_what_is_written(tmp_path, monkeypatch):
    """Ctrl-C during the second prompt's search: the first prompt's files stay, exit 130,
    and a rerun skips the first prompt."""
    from tts_diffusion.pipelines.tts_pipeline import TTSPipeline

    real_run, calls = TTSPipeline.run, []

    def run_then_interrupt(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, *a, **k)

    monkeypatch.setattr(TTSPipeline, "run", run_then_interrupt)
    out = tmp_path / "runs"
    args = ["two red circles", "a blue star", "a green square", "--out-dir", str(out), *FAST]
    r = CliRunner().invoke(main, ["generate", *args])
    assert r.exit_code == 130, r.output
    assert sorted(p.name for p in out.iterdir()) == ["001-two-red-circles.json", "001-two-red-circles.png"]
    monkeypatch.setattr(TTSPipeline, "run", real_run)
    r = _run(*args)
    assert r.exit_code == 0 and "1 of 3 prompts already done" in r.stderr
    assert len(list(out.glob("*.png"))) == 3


def test_a_prompt_failing_at_run_time_keeps_the_others(tmp_path, monkeypatch):
    """The second of three prompts fails inside its search: its error line names it, the
    first and third are written, the command exits 2, and a rerun runs only the second."""
    from tts_diffusion.pipelines.tts_pipeline import TTSPipeline

    real_run, calls = TTSPipeline.run, []

    def fail_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise TTSInputError("the verifier could not score this prompt")
        return real_run(self, *a, **k)

    monkeypatch.setattr(TTSPipeline, "run", fail_second)
    out = tmp_path / "runs"
    args = ["two red circles", "a blue star", "a green square", "--out-dir", str(out), *FAST]
    r = CliRunner().invoke(main, ["generate", *args])
    assert r.exit_code == 2, r.output
    assert "error: prompt 2: the verifier could not score this prompt" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 prompts failed")
    assert sorted(p.name for p in out.glob("*.png")) == ["001-two-red-circles.png", "003-a-green-square.png"]
    monkeypatch.setattr(TTSPipeline, "run", real_run)
    r = _run(*args)
    assert r.exit_code == 0 and "2 of 3 prompts already done" in r.stderr and "[2/3] a blue star" in r.stderr
