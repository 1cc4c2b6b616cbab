"""What decides how a page is read, in one small frozen dataclass.

``EngineSettings`` is built once from a command's options (``EngineSettings.from_options``) and handed
as it is to whatever reads pages: the local engine (``OCREngine.from_settings``), the OpenAI-compatible
server backend (``ServerBackend.from_settings``), the batch runner's resume fingerprint
(``EngineSettings.fingerprint``), and workers in other processes (it holds plain values only, so it
pickles). A new option is one field here (with its fingerprint rule) and one command-line option of the
same name; the engine's constructor takes the field as a keyword of the same name.

``ServerSettings`` is kept apart: where pages are sent (URLs, requests in flight, timeout, and whether
the server's model was named or is to be discovered) changes neither what the model is asked nor the
resume fingerprint, and the local engine and the ``ask`` command never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from varco_ocr import model_spec
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_LONG_SIDE
from varco_ocr.server import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT

# A field's ``fingerprint`` rule (field metadata), read by EngineSettings.fingerprint:
ALWAYS = "always"  # recorded with its value
IF_CHANGED = "if_changed"  # recorded only when not the default, so that adding such a field (whose default
# keeps today's behaviour) leaves the fingerprints of existing output folders as they were
NEVER = "never"  # does not change the words read (see the field's comment)


def _field(default: Any, fingerprint: str) -> Any:
    return field(default=default, metadata={"fingerprint": fingerprint})


@dataclass(frozen=True)
class EngineSettings:
    """How a page is read. Defaults are the command line's (and ``OCREngine``'s)."""

    # NEVER here: the batch runner records the model separately (BatchOptions.model), since with
    # --server it is the name the server reports, known only once the server is reached.
    model: str = _field(model_spec.DEFAULT_MODEL, NEVER)
    # NEVER: the same model and inputs on another device or in another precision read the same words up
    # to rounding; recording them would redo a whole output folder resumed on another machine ("auto").
    device: str = _field("auto", NEVER)
    dtype: str = _field("auto", NEVER)
    max_new_tokens: int = _field(model_spec.DEFAULT_MAX_NEW_TOKENS, ALWAYS)
    min_long_side: int = _field(DEFAULT_MIN_LONG_SIDE, ALWAYS)
    max_grid: int = _field(model_spec.DEFAULT_MAX_GRID, ALWAYS)
    # NEVER: a larger image is refused, never read differently. None: no limit (the command line's 0).
    max_pixels: int | None = _field(DEFAULT_MAX_PIXELS, NEVER)
    keep_raw: bool = _field(False, ALWAYS)
    split_truncated: bool = _field(False, IF_CHANGED)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "EngineSettings":
        """From a command's parsed options (``ctx.params``): each field whose name is an option of the
        command; the others keep their defaults (``ask`` has no ``--keep-raw``). ``--max-pixels 0``
        means no limit."""
        values = {f.name: options[f.name] for f in fields(cls) if f.name in options}
        if "max_pixels" in values:
            values["max_pixels"] = values["max_pixels"] or None
        return cls(**values)

    def fingerprint(self) -> dict[str, Any]:
        """The settings part of the batch runner's resume fingerprint (``BatchOptions.settings``): the
        fields that change the words read, by each field's rule. The values the releases before this
        class computed are kept byte for byte, so their output folders resume without redoing work."""
        recorded: dict[str, Any] = {}
        for f in fields(self):
            rule = f.metadata.get("fingerprint")
            if rule not in (ALWAYS, IF_CHANGED, NEVER):  # a new field must say whether it changes the words read
                raise ValueError(f"EngineSettings.{f.name}: no fingerprint rule (ALWAYS, IF_CHANGED or NEVER)")
            value = getattr(self, f.name)
            if rule == ALWAYS or (rule == IF_CHANGED and value != f.default):
                recorded[f.name] = value
        return recorded


@dataclass(frozen=True)
class ServerSettings:
    """Where pages are read with ``--server``: OpenAI-compatible server URLs and how they are called."""

    urls: tuple[str, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    # Whether the model was named (--model, even as the default name): then it is asked for by that
    # name; otherwise it is discovered from the server's /v1/models.
    model_given: bool = False
