"""Serving the demo: load the model chosen at start-up, build the page, launch.

Binds to 127.0.0.1 unless told otherwise and warns when it is not (or with `share`,
which opens a public link). The model and every weight path are fixed here, at start-up
(the reflect critic and refiner folders through `ServerModels`); neither the page nor its
API takes a path.
"""
from __future__ import annotations

import ipaddress
import sys
from typing import Any

from ..errors import TTSInputError
from .app import build_demo, import_gradio
from .request import DemoLimits
from .server_models import ServerModels
from .style import CSS, theme


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, password); None stays None."""
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise TTSInputError("--auth must look like USER:PASS (both non-empty)")
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, share: bool, auth: Any) -> str | None:
    """The warning printed when the server is reachable from other machines."""
    if is_loopback(host) and not share:
        return None
    where = "through a public gradio.live link" if share else f"on {host}, reachable from other machines"
    hint = "" if auth else "; anyone who can reach it can run searches (add --auth USER:PASS)"
    return f"warning: serving the demo {where}{hint}"


def serve(demo: Any, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          auth: tuple[str, str] | None = None, block: bool = True, quiet: bool = False) -> Any:
    """`demo.launch` with the demo's theme and safe defaults (no error tracebacks in the page)."""
    gr = import_gradio()
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=False,
                       prevent_thread_lock=not block, quiet=quiet, theme=theme(gr), css=CSS,
                       footer_links=["gradio"], ssr_mode=False, run_history=False)


def launch(model: str | None = None, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           auth: str | None = None, limits: DemoLimits | None = None, device: str | None = None,
           dtype: str = "auto", max_batch: int = 16, models: ServerModels | None = None) -> None:
    """Load `model` (None: the embedded default) and serve the demo until interrupted.
    `models`: the critic / refiner folders the page offers (checked when made)."""
    import torch

    from ..pipelines import TTSPipeline

    credentials = parse_auth(auth)
    warning = exposure_warning(host, share, credentials)
    if warning:
        print(warning, file=sys.stderr)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        torch_dtype = torch.float16 if device.startswith("cuda") else torch.float32
    tts = TTSPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    serve(build_demo(tts, limits, max_batch=max_batch, models=models), host=host, port=port, share=share, auth=credentials)
