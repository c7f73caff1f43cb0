#!/usr/bin/env bash
# Run the unit tests on each supported Python (oldest and newest by default), each in its own venv.
# Interpreters come from the machine: pythonX.Y on PATH, pyenv's versions, or `uv python find`
# (PyPI's uv cannot download interpreters here: only the package registries are reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONS=${PYTHONS:-"3.10 3.13"}
EXTRAS=${EXTRAS:-"dev,openai,webrtcvad,silero,webrtc"}
# The unit tests: the core's and the OpenAI backend's against its protocol-exact test server.
TESTS=${TESTS:-"tests/test_app.py tests/test_audio.py tests/test_cli.py tests/test_conversation.py
  tests/test_logs.py tests/test_recorder.py tests/test_cli_fixes.py tests/test_session.py
  tests/test_tools.py tests/test_vad.py tests/openai"}

# Known to fail on 3.13 only (found by this script; reported, owned by the session redesign):
# each asserts the conversation right after the scripted/test server *recorded* a call, before
# the session applied its answer; 3.13's scheduling lets the test resume first (and one sends a
# second Delete). Remove a line when its test is fixed; `KNOWN_313=` runs them all.
KNOWN_313=${KNOWN_313-"tests/test_session.py::test_barge_in_truncates_to_what_was_played
  tests/test_session.py::test_barge_in_before_any_audio_deletes_the_item_and_cancels
  tests/openai/test_agent_session.py::test_tool_output_survives_an_interruption_and_is_sent_once
  tests/openai/test_interrupt.py::test_truncate_mid_stream_uses_what_arrived"}

find_python() {
  local v=$1 p
  for p in "python$v" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" \
           /usr/bin/python"$v" /usr/local/bin/python"$v"; do
    if "$p" -c 'import sys, venv' >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  if command -v uv >/dev/null && p=$(uv python find "$v" 2>/dev/null); then echo "$p"; return 0; fi
  return 1
}

for v in $PYTHONS; do
  py=$(find_python "$v") || { echo "pythons: no Python $v on this machine (PATH, pyenv, uv)" >&2; exit 1; }
  venv=".venv-py$v"
  echo "== Python $v ($py) in $venv"
  stamp=$(cat pyproject.toml | sha1sum | cut -c1-16)-$EXTRAS
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[$EXTRAS]"
    echo "$stamp" > "$venv/.installed"
  fi
  deselect=()
  if [ "$v" = "3.13" ]; then
    for t in $KNOWN_313; do deselect+=(--deselect "$t"); done
    [ ${#deselect[@]} -eq 0 ] || echo "   (deselected on 3.13, known failures: ${KNOWN_313//$'\n'/ })"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${deselect[@]}" $TESTS
done
