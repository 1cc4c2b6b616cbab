#!/usr/bin/env bash
# Does this worktree's test file kill these mutants? Runs the given tests against mutmut's mutated copy of
# varco_ocr (from mutants/, made by benchmarks/mutation.sh) with each named mutant switched on, in a scratch
# copy so a mutmut run in progress is not disturbed. Prints KILLED or SURVIVED per mutant.
# Usage: benchmarks/mutation_check.sh tests/test_parsing.py varco_ocr.parsing.x_to_pixels__mutmut_32 ...
# The first argument is split on spaces into pytest arguments, so it can name several tests (node ids):
#     benchmarks/mutation_check.sh "tests/test_document.py::test_a tests/test_document.py::test_b" MUTANT ...
# A name that is no mutant (e.g. "none") runs the unmutated code: it must print SURVIVED.
set -uo pipefail
cd "$(dirname "$0")/.."
read -ra tests <<< "$1"; shift
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r mutants/varco_ocr "$scratch/varco_ocr"
cp -r tests samples benchmarks pyproject.toml "$scratch/"
export VARCO_SHARED="${VARCO_SHARED:-$(cd .. && pwd)/shared}"
for m in "$@"; do
    if (cd "$scratch" && MUTANT_UNDER_TEST="$m" PYTHONPATH="$scratch" python -m pytest -x -q -p no:cacheprovider \
            -m "not slow" "${tests[@]}" >/dev/null 2>&1); then
        echo "SURVIVED $m"
    else
        echo "KILLED   $m"
    fi
done
