"""The demo as served (no browser): loopback only by default, no file outside the
server's own outputs can be read through it (model weights, the repository, /etc), and
`--auth` keeps visitors out until they log in. A stub pipeline: no search runs here."""
from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")

from tts_diffusion.demo import DemoLimits, build_demo, serve  # noqa: E402
from tts_diffusion.paths import default_model_path  # noqa: E402

STUB = SimpleNamespace(defaults={"num_inference_steps": 10, "guidance_scale": 4.5, "height": 64, "width": 64},
                       is_default_model=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def served():
    demos = []

    def start(**kw):
        demo = build_demo(STUB, DemoLimits(max_queue=2))
        port = _free_port()
        serve(demo, port=port, block=False, quiet=True, **kw)
        demos.append(demo)
        return demo, f"http://127.0.0.1:{port}/"

    yield start
    for d in demos:
        d.close()


def test_binds_to_loopback_and_serves_no_file_it_did_not_make(served):
    demo, url = served()
    assert demo.server_name == "127.0.0.1"
    assert _status(url) == 200
    weights = next(p for p in (default_model_path() / "transformer").iterdir() if p.suffix == ".safetensors")
    repo_file = Path(__file__).resolve().parent.parent / "pyproject.toml"
    for target in ("/etc/passwd", str(weights), str(repo_file)):
        assert _status(url + "gradio_api/file=" + urllib.parse.quote(target)) in (403, 404), target


def test_auth_keeps_visitors_out(served):
    demo, url = served(auth=("ann", "secret"))
    assert _status(url + "config") == 401
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "gradio_api/info", timeout=30)
