"""Where a model name points, decided before any weights are loaded: a local folder, a cached hub id, or a hub id
that needs the network (and whether the network is there).

One check shared by the OCR engine and `varco-train compose`, so both fail the same way and at once: without a
network the hub client retries for about a minute before giving up, and a path that does not exist reaches the
hub as a malformed repo id ("Repo id must use alphanumeric chars ..."), which names the wrong problem.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

# huggingface_hub's own truth values for HF_HUB_OFFLINE (constants.ENV_VARS_TRUE_VALUES); read at call time,
# not import time, so a process can set the variable after importing us.
_TRUE = {"1", "ON", "YES", "TRUE"}
DEFAULT_ENDPOINT = "https://huggingface.co"

ProblemKind = Literal["not_a_folder", "offline", "unreachable"]


@dataclass(frozen=True)
class SourceProblem:
    """Why ``model`` cannot be loaded, known before trying. ``reason`` is a complete clause naming the model;
    callers add advice in their own terms (a library parameter, a CLI flag)."""

    kind: ProblemKind
    reason: str


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def looks_like_path(model: str) -> bool:
    """A value the user meant as a folder: starts like a path (``.``, ``/``, ``~``, a drive letter), has more
    parts than a hub id's ``owner/name``, or its first part is an existing folder (``models/my-model``)."""
    if model.startswith((".", "/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", model):
        return True
    parts = re.split(r"[\\/]", model)
    return len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0]))


def is_cached(repo_id: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: the loader names what is wrong
        return False


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when one TCP connection to the hub endpoint (``HF_ENDPOINT``) succeeds, else why it failed."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    host = endpoint.hostname or endpoint.path
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} is unreachable ({e.strerror or e})" if endpoint.port else f"{host} is unreachable ({e.strerror or e})"
    return None


def source_problem(model: str, timeout: float = 3.0) -> SourceProblem | None:
    """Why ``model`` (a folder or a hub id) cannot be loaded, when that is clear without loading it; None when
    loading may go ahead (a folder, a cached hub id, or a reachable hub)."""
    if os.path.isdir(model):
        return None
    if os.path.exists(model):
        return SourceProblem("not_a_folder", f"not a model folder: {model} (a file)")
    if looks_like_path(model):
        return SourceProblem("not_a_folder", f"no such model folder: {model}")
    if is_cached(model):
        return None
    if hub_offline():
        return SourceProblem("offline", f"cannot load model {model!r}: it is not in the Hugging Face cache and "
                                        "HF_HUB_OFFLINE is set")
    unreachable = hub_unreachable(timeout)
    if unreachable:
        return SourceProblem("unreachable", f"cannot load model {model!r}: it is not a local folder, not in the "
                                            f"Hugging Face cache, and {unreachable}")
    return None


def progress_bars_only_on_a_terminal() -> None:
    """Command-line entry points: transformers' "Loading weights" and the hub's download bars only when stderr is
    a terminal, so logs and pipes stay clean. Both libraries read HF_HUB_DISABLE_PROGRESS_BARS when first
    imported; a value the user set is kept."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].strip().upper() not in _TRUE:
        return
    if "huggingface_hub" in sys.modules:  # imported already: the variable is no longer read
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
