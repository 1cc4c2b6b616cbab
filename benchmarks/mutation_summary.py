"""Per-module counts of a mutmut 3 run (benchmarks/mutation.sh), read from its work folder mutants/.

Prints one row per mutated module: killed / survived / timeout / suspicious / no tests / not checked, and the
score (killed + timeout) / (all checked; a timeout is a mutant that made a test hang, so it was noticed), then the names of the surviving mutants (`mutmut show NAME` prints the diff).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code  # mutmut's own exit-code -> verdict table

COLUMNS = ("killed", "survived", "timeout", "suspicious", "no tests", "not checked")


def main(root: Path = Path("mutants")) -> int:
    metas = sorted(root.joinpath("varco_ocr").rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {root}/ (run benchmarks/mutation.sh first)", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    survivors: list[str] = []
    print(f"{'module':<28}" + "".join(f"{c:>12}" for c in COLUMNS) + f"{'score':>8}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter[str] = Counter()
        for name, code in codes.items():
            status = status_by_exit_code[code]
            # every other verdict (segfault, skipped, type check) is rare here; count it as suspicious
            counts[status if status in COLUMNS else "suspicious"] += 1
            if status == "survived":
                survivors.append(name)
        total += counts
        print(_row(str(meta.relative_to(root))[: -len(".py.meta")].replace("/", "."), counts))
    print(_row("total", total))
    print("\nsurvived:")
    for name in sorted(survivors):
        print("  " + name)
    return 0


def _row(label: str, counts: Counter[str]) -> str:
    checked = sum(counts[c] for c in COLUMNS if c not in ("not checked", "no tests"))
    score = f"{100 * (counts['killed'] + counts['timeout']) / checked:.1f}%" if checked else "-"
    return f"{label:<28}" + "".join(f"{counts[c]:>12}" for c in COLUMNS) + f"{score:>8}"


if __name__ == "__main__":
    raise SystemExit(main())
