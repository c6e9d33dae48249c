"""The demo's event handlers, free of gradio: they take the page's values as a plain dict
(see `request.parse_request`) and yield updates as dicts keyed by output name

    status      Markdown: waiting (place in the queue), running (NFE, best so far, seconds,
                why it is quiet), the summary, or the one error message (status.py)
    seed        the seed used (after "randomize")
    best        path of the best image so far as shown (scaled up; an RGBA result: the
                cut-out over a checkerboard); best_label: what it is
    matte       path of the RGBA result's matte as shown, or None; matte_visible
    gallery     [(image path, caption)] best first; plot: a matplotlib Figure (plot.py)
    chains      [(image path, caption)] of reflection rounds; chains_table: Markdown; chains_visible
    files       the downloads: the best image (RGBA: the RGBA PNG, the RGB image and the
                matte) and the JSON run log

Images go to the page as files written once each (files.py: why never PIL images).
`app.py` maps the names to components; the tests call these functions directly.
"""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Iterator, Mapping

from ..records.result import SearchResult
from ..core.state import Progress
from ..errors import TTSInputError
from ..request import SearchRequest
from .files import RunFiles, RunFolder
from .render import best_images, chain_items, gallery_items, to_display
from .request import DemoLimits, parse_request
from .runner import Quiet, RunCancelled, stream_run
from .server_models import ServerModels
from .status import done_message, error_message, running_message, starting_message, waiting_message
from .waiting import FairQueue, Ticket

log = logging.getLogger("tts_diffusion.demo")

#: seconds between status updates while a request waits, or while a search does not report
HEARTBEAT = 1.0
BEST_LABEL = "Best image"
RGBA_LABEL = "Best image: the cut-out over a checkerboard (RGBA)"

#: what a new request clears on the page
CLEARED = {"best": None, "best_label": BEST_LABEL, "matte": None, "matte_visible": False, "gallery": [],
           "plot": None, "files": None, "chains": [], "chains_table": "", "chains_visible": False}


class DemoHandlers:
    """Handlers bound to one `TTSPipeline` (shared by every visitor; each request gets its
    own process view, budget and call state), the server's limits, its queue (at most
    `limits.concurrency` searches at once, `limits.max_queue` waiting) and the model folders
    it fixed at start-up."""

    def __init__(self, tts: Any, limits: DemoLimits | None = None, *, files: RunFiles | None = None,
                 max_batch: int = 16, min_interval: float = 0.25, models: ServerModels | None = None):
        self.tts = tts
        self.limits = limits or DemoLimits()
        self.models = models or ServerModels()
        self.files = files or RunFiles()
        self.max_batch = int(max_batch)
        self.min_interval = float(min_interval)
        self.queue = FairQueue(self.limits.concurrency, self.limits.max_queue)

    def generate(self, raw: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Validate, wait for a turn (saying where in the queue), run with live progress, then
        show the result. Bad input yields one `status` error and stops, before it queues;
        the server keeps serving."""
        try:
            request = parse_request(self.tts, raw, self.limits, models=self.models)
            ticket = self.queue.enter()
        except TTSInputError as e:
            yield {"status": error_message(str(e))}
            return
        try:
            yield from self._wait(ticket, request)
            yield from self._run(request, self.files.new_run())
        finally:
            self.queue.leave(ticket)

    def _wait(self, ticket: Ticket, request: SearchRequest) -> Iterator[dict[str, Any]]:
        first = {**CLEARED, "seed": request.seed}
        while not self.queue.wait(ticket, 0.0 if first else HEARTBEAT):
            ahead, running = self.queue.place(ticket)
            yield {**first, "status": waiting_message(ahead, running, time.monotonic() - ticket.since)}
            first = {}
        yield {**first, "status": starting_message(request.searcher, request.verifier, request.budget)}

    def _run(self, request: SearchRequest, run: RunFolder) -> Iterator[dict[str, Any]]:
        start = time.monotonic()
        last: Progress | None = None
        shown: Any = None  # the image on the page (a best candidate or a preview)
        result: SearchResult | None = None
        try:
            for event in stream_run(self.tts, request, min_interval=self.min_interval, max_batch=self.max_batch,
                                    heartbeat=HEARTBEAT):
                if isinstance(event, Quiet):
                    yield {"status": running_message(request.searcher, last, time.monotonic() - start, event.seconds)}
                elif isinstance(event, Progress):
                    last = event
                    update = {"status": running_message(request.searcher, event, time.monotonic() - start)}
                    current = event.best if event.best is not None else event.preview
                    image = getattr(current, "image", current)
                    if image is not None and current is not shown:  # each image is sent once
                        shown = current
                        update["best"] = run.image(to_display(image))
                        update["best_label"] = "Best so far" if event.best is not None else \
                            "Best estimate so far (preview; not scored yet)"
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
        yield self.show(result, run)

    def show(self, result: SearchResult, run: RunFolder) -> dict[str, Any]:
        """Every output for a finished run."""
        from .plot import score_plot  # matplotlib: checked when the app is built (app.import_gradio)

        best, matte = best_images(result)
        chains, table = chain_items(result)
        return {"status": done_message(result), "seed": result.settings.get("seed"),
                "best": run.image(best), "best_label": RGBA_LABEL if matte is not None else BEST_LABEL,
                "matte": None if matte is None else run.image(matte), "matte_visible": matte is not None,
                "gallery": [(run.image(img), cap) for img, cap in gallery_items(result)],
                "plot": score_plot(result), "files": run.save(result),
                "chains": [(run.image(img), cap) for img, cap in chains], "chains_table": table,
                "chains_visible": bool(chains or table)}
