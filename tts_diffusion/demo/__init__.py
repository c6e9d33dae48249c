"""The Gradio demo (`tts-diffusion demo`, extra `demo`).

    from tts_diffusion import TTSPipeline
    from tts_diffusion.demo import build_demo, serve
    demo = build_demo(TTSPipeline.from_pretrained())   # a gradio.Blocks
    serve(demo)                                         # http://127.0.0.1:7860

Modules: `request` (page values -> a checked SearchRequest, limits), `server_models` (model
folders fixed at start-up), `waiting` (the queue, with each request's place), `runner`
(search in a worker thread, progress stream, heartbeat), `status` (the status lines),
`render` (what a result looks like), `plot` (score against NFE), `files` (the images and
downloads of a run, as files), `handlers` (the event handlers, without gradio), `app`
(layout), `style` (CSS), `choices` (a dropdown that takes only its choices), `server`
(launch).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before any module here imports gradio

from .handlers import DemoHandlers
from .request import DemoLimits, parse_request
from .server_models import ServerModels

__all__ = ["DemoHandlers", "DemoLimits", "ServerModels", "build_demo", "launch", "parse_request", "serve"]


def build_demo(*args, **kwargs):
    """See `tts_diffusion.demo.app.build_demo` (imports gradio on first use)."""
    from .app import build_demo as _build

    return _build(*args, **kwargs)


def serve(*args, **kwargs):
    """See `tts_diffusion.demo.server.serve`."""
    from .server import serve as _serve

    return _serve(*args, **kwargs)


def launch(*args, **kwargs):
    """See `tts_diffusion.demo.server.launch`."""
    from .server import launch as _launch

    return _launch(*args, **kwargs)
