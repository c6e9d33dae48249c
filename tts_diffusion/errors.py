"""Exceptions users see. `TTSInputError` is bad input: the CLI prints its message on one
line and exits with code 2."""


class TTSInputError(ValueError):
    """Bad input from the user (prompt, budget, model path, size, unknown name, ...)."""


class MissingWeightsError(TTSInputError, FileNotFoundError):
    """A verifier or model needs weights that are not on disk; the message names the file
    and the option or environment variable that points at it."""


class BudgetExceeded(RuntimeError):
    """A method tried to spend more NFE (or verifier calls) than its budget allows."""
