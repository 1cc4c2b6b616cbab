#!/usr/bin/env bash
# Does this worktree's test file kill these mutants? Runs the given tests against mutmut's mutated copy of
# varco_ocr (from mutants/, made by benchmarks/mutation.sh) with each named mutant switched on, in a scratch
# copy so a mutmut run in progress is not disturbed. Prints KILLED or SURVIVED per mutant.
# Usage: benchmarks/mutation_check.sh tests/test_parsing.py varco_ocr.parsing.x_to_pixels__mutmut_32 ...
# The first argument is split on spaces into pytest arguments, so it can name several tests (node ids):
#     benchmarks/mutation_check.sh "tests/test_document.py::test_a tests/test_document.py::test_b" MUTANT ...
# A name that is no mutant (e.g. "none") runs the unmutated code: it must print SURVIVED.
# One Python process imports pytest and the libraries once and forks a pytest run per mutant (mutmut's
# trampolines read MUTANT_UNDER_TEST at every call), so a check costs the tests' time, not an interpreter
# start-up; a mutant whose tests run over MUTATION_CHECK_TIMEOUT seconds (default 120) counts as killed.
set -uo pipefail
cd "$(dirname "$0")/.."
read -ra tests <<< "$1"; shift
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r mutants/varco_ocr "$scratch/varco_ocr"
cp -r tests samples benchmarks pyproject.toml "$scratch/"
export VARCO_SHARED="${VARCO_SHARED:-$(cd .. && pwd)/shared}"
cd "$scratch" && PYTHONPATH="$scratch" python - "${#tests[@]}" "${tests[@]}" "$@" <<'PY'
import os
import signal
import sys

import numpy, PIL.Image, pytest  # noqa: F401  imported once, before the forks

count = int(sys.argv[1])
tests, mutants = sys.argv[2 : 2 + count], sys.argv[2 + count :]
timeout = int(os.environ.get("MUTATION_CHECK_TIMEOUT", "120"))
for name in mutants:
    pid = os.fork()
    if pid == 0:
        os.environ["MUTANT_UNDER_TEST"] = name
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        signal.alarm(timeout)  # a mutant that never stops ends here (SIGALRM), as a kill
        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests])
        os._exit(int(code))
    _, status = os.waitpid(pid, 0)
    print(("SURVIVED " if os.waitstatus_to_exitcode(status) == 0 else "KILLED   ") + name, flush=True)
PY
