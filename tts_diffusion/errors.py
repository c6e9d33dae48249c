"""Exceptions users see. `TTSInputError` is bad input: the CLI prints its message on one
line and exits with code 2."""


class TTSInputError(ValueError):
    """Bad input from the user (prompt, budget, model path, size, unknown name, ...)."""


class MissingWeightsError(TTSInputError, FileNotFoundError):
    """A verifier or model needs weights that are not on disk; the message names the file
    and the option or environment variable that points at it."""


class BudgetExceeded(RuntimeError):
    """A method tried to spend more NFE (or verifier calls) than its budget allows."""


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by Ctrl-C (or a signal the CLI turns into one) before it finished.

    `result` is the best found so far as a `SearchResult` marked `interrupted` (with the
    settings and provenance of a finished one, so its sidecar replays the full search), or
    None when nothing was scored yet. A KeyboardInterrupt, so `except KeyboardInterrupt`
    still catches it."""

    def __init__(self, result=None):
        super().__init__("search interrupted")
        self.result = result
