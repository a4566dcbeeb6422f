#!/usr/bin/env bash
# Install requirements.lock, exactly, into a new or existing virtual environment:
#   env/install.sh VENV LOCK        (PYTHON picks the interpreter for a new one; default python3)
# Every package at its locked version and hash, none resolved on the day (--no-deps), and a copy of the
# lock kept in the environment (VENV/medlens.lock) so that what runs there can name the lock it came from.
# Used by `make venv` (which then adds medlens itself) and by the container recipes in this folder.
set -euo pipefail
unset PYTHONPATH  # the environment alone is checked, not what a PYTHONPATH adds to it
venv=${1:?usage: env/install.sh VENV LOCK}
lock=${2:?usage: env/install.sh VENV LOCK}
test -x "$venv/bin/python" || "${PYTHON:-python3}" -m venv "$venv"
# Bytecode is compiled afterwards on every core (pip does it in one process: 2:37 -> 2:25 on 2 cores). It
# must exist up front: where PYTHONDONTWRITEBYTECODE is set nothing compiled at import is kept, and every
# job would compile torch again.
"$venv/bin/python" -m pip install --quiet --no-compile --require-hashes --no-deps -r "$lock" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }  # a local mirror's pip.conf noise
# The lock overrides one requirement on purpose (overrides.txt: medspacy and PyRuSH ask for spacy < 3.8 on
# Python 3.11, whose thinc cannot run with numpy 2); pip check may report exactly those lines, nothing else.
# (The container recipes copy only this script and the lock, so the accepted lines are written here.)
accepted='^(medspacy|pyrush) [^ ]+ has requirement spacy<3\.8; python_version < "3\.12", but you have spacy 3\.'
if report=$("$venv/bin/python" -m pip check 2>&1); then
  echo "$report"
else
  others=$(grep -Ev "$accepted" <<<"$report" || true)
  if [[ -z $report || -n $others ]]; then echo "pip check failed: ${others:-no output}" >&2; exit 1; fi
  echo "pip check: accepted, overridden on purpose (overrides.txt):"
  echo "$report"
fi
cp "$lock" "$venv/medlens.lock"
# a file only newer Pythons parse (torch ships one) fails to compile, as it does under pip
"$venv/bin/python" -m compileall -qq -j 0 "$venv/lib" || true
