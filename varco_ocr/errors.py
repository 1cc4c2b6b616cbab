"""Errors the CLI turns into one clear line (never a traceback)."""


class VarcoOCRError(Exception):
    """Base class: the message is a complete, user-facing sentence."""


class InputError(VarcoOCRError):
    """An input file is missing, unreadable, not an image/PDF, corrupt or too large."""


class ModelLoadError(VarcoOCRError):
    """The model's weights could not be loaded (not cached, no network, not a VARCO-like folder)."""
