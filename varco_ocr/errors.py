"""Errors the CLI turns into one clear line (never a traceback)."""

from __future__ import annotations


class VarcoOCRError(Exception):
    """Base class: the message is a complete, user-facing sentence."""


class InputError(VarcoOCRError):
    """An input file is missing, unreadable, not an image/PDF, corrupt or too large."""


class ModelLoadError(VarcoOCRError):
    """The model's weights could not be loaded (not cached, no network, not a VARCO-like folder).

    The message advises in the library's terms (``OCREngine(model=...)``): a Python caller never passed a
    ``--model`` flag. ``cli_advice`` is the same advice in the command line's terms; the CLI prints
    :meth:`cli_message` instead of the message."""

    def __init__(self, reason: str, advice: str = "", cli_advice: str | None = None) -> None:
        self.reason = reason
        self.advice = advice
        self.cli_advice = advice if cli_advice is None else cli_advice
        super().__init__(_join(reason, advice))

    def cli_message(self) -> str:
        return _join(self.reason, self.cli_advice)


def _join(reason: str, advice: str) -> str:
    return f"{reason}; {advice}" if advice else reason


def cli_message(e: BaseException) -> str:
    """An error's one line in the command line's terms: a model that cannot be loaded is advised with --model,
    not with the library's ``OCREngine(model=...)``, also when another error wraps it (the batch runner's)."""
    for err in (e, e.__cause__):
        if isinstance(err, ModelLoadError):
            return err.cli_message()
    return str(e)
