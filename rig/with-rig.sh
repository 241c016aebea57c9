#!/usr/bin/env bash
# Run a command (e.g. the test suite) with the local control plane up, best effort:
#   rig/with-rig.sh .venv/bin/pytest
# Builds what is missing (bounded by VOICEHIVE_RIG_BUILD_TIMEOUT seconds, default 2700), starts
# what was built, runs the command, and stops the rig again if this script started it. A failed
# or skipped build never fails the command: tests then fall back to KMock and fakes, and the
# pytest header says so. VOICEHIVE_RIG=0 skips the rig entirely.
set -uo pipefail
# shellcheck source=rig/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "${VOICEHIVE_RIG:-}" = 0 ]; then exec "$@"; fi

started=0
if ! rig_running; then
  started=1
  "$RIG_DIR/up.sh" --build --best-effort
fi
"$@"
rc=$?
if [ "$started" = 1 ] && [ "${VOICEHIVE_RIG_KEEP:-0}" != 1 ]; then "$RIG_DIR/down.sh"; fi
exit $rc
