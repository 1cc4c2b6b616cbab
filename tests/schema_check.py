"""Every document JSON the tests write is validated against the shipped schema
(varco_ocr/schemas/document.schema.json): used by the ``documents_are_schema_valid`` fixture in
conftest.py and by the CLI tests for documents printed on stdout."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "varco_ocr" / "schemas" / "document.schema.json"


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def assert_valid_document(data: object, where: object = "document") -> None:
    """Validate one document (parsed JSON) against the schema, naming the first problems."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}: not schema-valid: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


def assert_valid_json_outputs(folder: Path) -> int:
    """Validate every ``*.json`` under ``folder`` (the run log is JSON lines, not matched; hidden folders,
    such as the Ray run's manifest in ``.varco-ocr/``, hold records, not documents); returns how many."""
    count = 0
    for path in sorted(Path(folder).rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]):
            continue
        assert_valid_document(json.loads(path.read_text(encoding="utf-8")), path)
        count += 1
    return count
