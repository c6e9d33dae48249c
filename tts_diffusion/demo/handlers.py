"""The demo's event handlers, free of gradio: they take the page's values as a plain dict
(see `request.parse_request`) and yield updates as dicts keyed by output name

    status   Markdown line: progress, the summary, or the one error message
    seed     the seed used (after "randomize")
    best     the best image so far (PIL, scaled up for display)
    gallery  [(image, caption)] best first; plot: DataFrame (NFE, best score)
    chains   [(image, caption)] of reflection rounds; chains_table: Markdown; chains_visible
    files    [image path, JSON path] to download

`app.py` maps the names to components; the tests call these functions directly.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any, Iterator, Mapping

from ..core.result import SearchResult
from ..core.state import Progress
from ..errors import TTSInputError
from .render import RunFiles, chain_items, gallery_items, summary, to_display, trace_table
from .request import DemoLimits, RunRequest, parse_request
from .runner import RunCancelled, stream_run
from .server_models import ServerModels

log = logging.getLogger("tts_diffusion.demo")


def error_message(message: str) -> str:
    """The status line for bad input (one line, the error's own words)."""
    return f"⚠️ **Error:** {' '.join(str(message).split())}"


def progress_message(p: Progress, request: RunRequest, width: int = 20) -> str:
    """'Running smc · ▰▰▰▱▱ 120 / 200 NFE · best so far 0.750'."""
    frac = 0.0 if p.max_nfe <= 0 else min(1.0, p.nfe / p.max_nfe)
    filled = int(round(frac * width))
    best = "" if p.best_score is None else f" · best so far {p.best_score:.3f}"
    return f"Running **{request.searcher}** · {'▰' * filled}{'▱' * (width - filled)} {p.nfe} / {p.max_nfe} NFE{best}"


class DemoHandlers:
    """Handlers bound to one `TTSPipeline` (shared by every visitor; each request gets its
    own process view, budget and call state) and the server's limits."""

    def __init__(self, tts: Any, limits: DemoLimits | None = None, *, files: RunFiles | None = None,
                 max_batch: int = 16, min_interval: float = 0.25, models: ServerModels | None = None):
        self.tts = tts
        self.models = models or ServerModels()
        self.limits = limits or DemoLimits()
        self.files = files or RunFiles()
        self.max_batch = int(max_batch)
        self.min_interval = float(min_interval)

    def generate(self, raw: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Validate, run with live progress, then show the result. Bad input yields one
        `status` error and stops; the server keeps serving."""
        try:
            request = parse_request(self.tts, raw, self.limits, models=self.models)
        except TTSInputError as e:
            yield {"status": error_message(str(e))}
            return
        yield {"status": f"Starting **{request.searcher}** with **{request.verifier}**, budget {request.budget} NFE…",
               "seed": request.seed, "best": None, "gallery": [], "plot": None, "files": None,
               "chains": [], "chains_table": "", "chains_visible": False}
        result: SearchResult | None = None
        try:
            for event in stream_run(self.tts, request, min_interval=self.min_interval, max_batch=self.max_batch):
                if isinstance(event, Progress):
                    update = {"status": progress_message(event, request)}
                    if event.best is not None and getattr(event.best, "image", None) is not None:
                        update["best"] = to_display(event.best.image)
                    yield update
                else:
                    result = event
        except TTSInputError as e:
            yield {"status": error_message(str(e))}
            return
        except RunCancelled:
            return
        except Exception as e:  # noqa: BLE001 - keep serving; the log has the traceback
            log.error("search failed:\n%s", traceback.format_exc())
            # the exception's text stays in the log: it may name the server's files
            yield {"status": error_message(f"the search failed ({type(e).__name__}); try other settings")}
            return
        assert result is not None
        yield self.show(result)

    def show(self, result: SearchResult) -> dict[str, Any]:
        """Every output for a finished run."""
        chains, table = chain_items(result)
        return {"status": summary(result), "seed": result.settings.get("seed"),
                "best": to_display(result.best.image), "gallery": gallery_items(result),
                "plot": trace_table(result), "files": self.files.save(result),
                "chains": chains, "chains_table": table, "chains_visible": bool(chains or table)}
