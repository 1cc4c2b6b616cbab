#!/usr/bin/env bash
# Mutation testing of the pure modules with mutmut 3 (issue 18 item 4). Configuration: [tool.mutmut] in
# pyproject.toml (which modules are mutated, which fast unit tests run). Install the tool first:
#     pip install 'mutmut==3.8.1'
# Usage: benchmarks/mutation.sh [module ...]   e.g. benchmarks/mutation.sh parsing layout eval.cleval
# With no argument every configured module is run, one after the other, most user-visible first.
# Work folder: mutants/ (git-ignored). Bounded: 2 workers (MUTMUT_CHILDREN), per-mutant timeout from
# mutmut's default (15x the test's own duration + 1 s).
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/conftest.py looks for ../shared beside the checkout; inside mutants/ that guess is wrong.
export VARCO_SHARED="${VARCO_SHARED:-$(cd .. && pwd)/shared}"
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
    modules=(parsing layout generation eval.cleval eval.rrc_e2e eval.deteval eval.rrc_detection preprocessing
             bands eval.text_metrics eval.geometry eval.regions eval.predictions eval.datasets eval.scores
             eval.report document)
fi
for m in "${modules[@]}"; do
    echo "== varco_ocr.$m"
    python -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "varco_ocr.$m.*" | tail -n 1
done
python benchmarks/mutation_summary.py
