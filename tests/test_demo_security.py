"""Nothing on the server's disk is reachable from the page or its API.

The demo is served on loopback with the embedded model and critic / refiner folders fixed
at start-up. A client of its API (`gradio_client`, which can send whatever the page's
widgets cannot) sets every string parameter of every event, one at a time, to the path of
a folder on the server that looks like a model folder (config.json, weights). While the
server answers, every file access of this process (the server's) is recorded: the audit
events "open", "os.listdir", "os.scandir", "glob.glob" and every `os.stat` / `os.lstat`.
Nothing under the folder may be touched, and the answer may not repeat the path (a prompt
may be repeated, as the visitor's own text, but the answer must then be the same as for a
path that does not exist)."""
from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
gradio_client = pytest.importorskip("gradio_client")

from demo_helpers import default_tts  # noqa: E402
from tts_diffusion.demo import DemoLimits, ServerModels, build_demo, serve  # noqa: E402
from tts_diffusion.demo.choices import FixedChoice  # noqa: E402
from tts_diffusion.demo.server_models import MODEL_OPTIONS  # noqa: E402

_WATCHED: list[str] = []  # folders being watched (the audit hook is process-wide and cannot be removed)
_TOUCHED: list[tuple[str, str]] = []
_AUDITED = ("open", "os.listdir", "os.scandir", "glob.glob", "os.chdir")


def _record(event: str, path) -> None:
    try:
        text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else None
    except TypeError:
        text = None
    if text and any(text.startswith(w) for w in _WATCHED):
        _TOUCHED.append((event, text))


def _audit(event: str, args: tuple) -> None:
    if _WATCHED and event in _AUDITED and args:
        _record(event, args[0])


sys.addaudithook(_audit)


@pytest.fixture
def watched(monkeypatch):
    """Start recording accesses under a folder: watched(folder) -> the list of accesses."""
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def spy(path, *a, _real=real, _name=name, **kw):
            if _WATCHED:
                _record(f"os.{_name}", path)
            return _real(path, *a, **kw)

        monkeypatch.setattr(os, name, spy)

    def watch(folder: Path) -> list:
        _WATCHED.append(str(folder))
        _TOUCHED.clear()
        return _TOUCHED

    yield watch
    _WATCHED.clear()


def _model_folder(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    models = ServerModels(critic_model=_model_folder(root / "critic-blip"), refiner_model=_model_folder(root / "lm"))
    demo = build_demo(default_tts(), DemoLimits(max_budget=40, max_steps=10), files_root=str(root / "runs"),
                      models=models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(demo, port=port, block=False, quiet=True)
    try:
        yield demo, f"http://127.0.0.1:{port}/", models
    finally:
        demo.close()


def _generate_fn(demo):
    return next(f for f in demo.fns.values() if f.api_name == "generate")


def _answer(client, args, status_at: int) -> tuple[str, str]:
    """(everything the server answered, its status line with times left out)"""
    try:
        out = client.predict(*args, api_name="/generate")
    except Exception as e:  # noqa: BLE001 - a refusal is an answer too
        return f"{type(e).__name__}: {e}", f"{type(e).__name__}: {e}"
    return json.dumps(out, default=str), re.sub(r"\d+(\.\d+)? s\b", "T s", str(out[status_at]))


def test_no_string_of_the_api_reaches_the_servers_disk(server, tmp_path, watched):
    demo, url, models = server
    probe = _model_folder(tmp_path / "probe-model")
    (probe / "sub").mkdir()
    (probe / "sub" / "config.json").write_text("{}")
    client = gradio_client.Client(url, verbose=False)
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    inputs = _generate_fn(demo).inputs
    status_at = [c.elem_id for c in _generate_fn(demo).outputs].index("status")
    assert [p["label"] for p in params] == [c.label for c in inputs]  # the API's parameters are the page's inputs
    by_id = {c.elem_id: k for k, c in enumerate(inputs) if c.elem_id}
    base = [p["parameter_default"] for p in params]
    base[by_id["prompt"]], base[by_id["budget"]], base[by_id["steps"]] = "a photo of a red circle", 40, 10

    strings = [k for k, p in enumerate(params) if "str" in p["python_type"]["type"] or "Literal" in p["python_type"]["type"]]
    assert len(strings) >= 20
    seen = watched(probe)
    answers = {}
    for k in strings:
        c = inputs[k]
        args = list(base)
        owner = (c.elem_id or "").split("-")
        if len(owner) >= 3 and owner[0] in ("searcher", "verifier"):  # an option of one searcher / verifier
            args[by_id[owner[0]]] = owner[1]
            if owner[1] == "reflect":  # the choices that would use a model folder
                for m in MODEL_OPTIONS:
                    args[by_id[f"searcher-reflect-{m.chooser}"]] = m.value
        if c.elem_id == "members":
            args[by_id["verifier"]] = "ensemble"

        args[k] = [str(probe)] if getattr(c, "multiselect", False) else str(probe)
        answer, status = _answer(client, args, status_at)
        assert not seen, (c.label, seen)
        assert "config.json" not in answer and "safetensors" not in answer, (c.label, answer)
        if c.label in ("Prompt", "Negative prompt") or "prompt" in c.label:
            # a prompt is the visitor's own text and may be repeated; what the server says must not
            # depend on what is at that path: the same once the folder is gone
            probe.rename(probe.with_name("moved"))
            try:
                assert _answer(client, args, status_at)[1] == status, c.label
            finally:
                probe.with_name("moved").rename(probe)
        else:
            assert str(probe) not in answer, (c.label, answer)
        answers[c.label] = answer
    # the server's own folders are not shown either
    for m in MODEL_OPTIONS:
        assert all(str(models.folder(m.option)) not in a for a in answers.values())
    # a refused fixed choice says which widget, not what was sent
    assert "Searcher: not one of its choices" in answers["Searcher"]


def test_page_events_other_than_generate_take_only_fixed_choices(server, tmp_path, watched):
    demo, _, _ = server
    probe = _model_folder(tmp_path / "probe-model")
    seen = watched(probe)
    generate = _generate_fn(demo).fn  # also bound to the prompt's Enter key: covered above
    others = [f for f in demo.fns.values() if f.fn is not None and f.fn is not generate]
    assert others
    for f in others:
        kinds = {type(c).__name__ for c in f.inputs}
        # a fixed choice, the server's own per-session state, or an example's index
        assert kinds <= {"FixedChoice", "State", "Dataset"}, (f.name, kinds)
        for c in f.inputs:
            if isinstance(c, FixedChoice):  # refused by the component before the function runs
                with pytest.raises(Exception, match="not one of its choices") as e:
                    c.preprocess(str(probe))
                assert str(probe) not in str(e.value)
        if "Dataset" not in kinds:  # and the function itself, given the path anyway, looks nothing up
            f.fn(*[str(probe)] * len(f.inputs))
    assert not seen


def test_server_models_are_fixed_choices_by_folder_name(server):
    demo, _, models = server
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for m in MODEL_OPTIONS:
        widget = by_id[f"searcher-reflect-{m.option}"]
        assert isinstance(widget, FixedChoice) and [v for _, v in widget.choices] == [models.folder(m.option).name]
        assert m.value in [v for _, v in by_id[f"searcher-reflect-{m.chooser}"].choices]
