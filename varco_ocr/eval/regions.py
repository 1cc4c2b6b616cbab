"""The two shapes every eval module speaks: a text region (polygon + text) and a data set sample.

Ground truth and predictions are both lists of :class:`TextRegion`, so every metric is a pure
function of ``(ground_truth_regions, predicted_regions)`` per image, whatever file format either
side came from. Coordinates are pixels of the original image, x to the right, y downwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

Point = tuple[float, float]

# ICDAR's marker for a "do not care" region (illegible or otherwise excluded text).
DONT_CARE_TEXT = "###"


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u200b``), so a file or
    zip-member name from an untrusted source prints on one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EvalDataError(ValueError):
    """A data set, prediction or annotation file is malformed. The message names the file (and the
    line when there is one); the CLI prints it as a one-line error."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        where = printable(f"{path}:{line}" if line is not None else f"{path}")
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class TextRegion:
    points: tuple[Point, ...]  # polygon vertices in order (ICDAR: clockwise in image coordinates)
    text: str = ""
    dont_care: bool = False

    @classmethod
    def from_ltrb(cls, x1: float, y1: float, x2: float, y2: float, text: str = "", dont_care: bool = False) -> "TextRegion":
        # Clockwise from the top-left corner, the order the RRC scripts expect.
        return cls(((x1, y1), (x2, y1), (x2, y2), (x1, y2)), text, dont_care)

    @property
    def ltrb(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))

    def flat_points(self) -> list[float]:
        return [c for p in self.points for c in p]


@dataclass(frozen=True)
class Sample:
    """One image of a data set with its ground truth."""

    key: str  # the image's stem (``img_12``): how predictions are matched to samples
    image_path: Path | None
    regions: tuple[TextRegion, ...]
    # Reading-order text of the page for CER/NED. When the annotation has no reading order of its
    # own, it is the regions' texts (do-not-care ones excluded) joined in annotation order.
    text: str = ""
    image_bytes: bytes | None = field(default=None, repr=False, compare=False)  # HF parquet rows
    width: int | None = None
    height: int | None = None


def reading_order_text(regions: Sequence[TextRegion]) -> str:
    """Annotation-order text of the regions that count (do-not-care ones are left out)."""
    return " ".join(r.text for r in regions if not r.dont_care and r.text)
