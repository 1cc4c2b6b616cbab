"""varco-ocr: OCR and document parsing with VARCO-VISION-2.0.

>>> from varco_ocr import OCREngine
>>> page = OCREngine().ocr("receipt.png")
>>> [(w.text, w.bbox) for w in page.words]
"""

from varco_ocr.document import Block, Document, Line, Page, Word

__all__ = ["OCREngine", "Document", "Page", "Block", "Line", "Word"]


def __getattr__(name: str):
    # The engine imports torch and transformers: load it only when asked for.
    if name == "OCREngine":
        from varco_ocr.engine import OCREngine

        return OCREngine
    raise AttributeError(name)
