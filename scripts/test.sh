#!/usr/bin/env bash
# `make test`: the whole suite, in two pytest runs side by side.
#
# The image tests (marked `image`: the OS image built, then booted under QEMU) spend most of
# their time in one emulated CPU, waiting on the guest; everything else wants the other core.
# Run one after the other they would take the sum of both; side by side, about the longer.
# The rest runs in two pytest-xdist workers, a test file each at a time (module fixtures stay
# whole): alone, its tests mostly waited (on browsers, calls, restarts) at under one core.
# Measured from a fresh clone on a quiet 2-core machine: the rest 51 -> 47 min, while the
# image half, its emulated guest now sharing the cores, went from 15 to 31 min; the whole
# run is CPU-bound, so the gain is small.
# Each run has its own temporary directory, and the image run's output is shown when it ends.
# With arguments (`make test PYTEST_ARGS="tests/ui -x"`) it is one plain pytest run instead.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
pytest=("$PY" -m pytest -q -p no:cacheprovider --durations=25)

if (($#)); then
    exec "${pytest[@]}" "$@"
fi

tmp=${TMPDIR:-/tmp}
mkdir -p build
log=build/test-image.log
started=$(date +%s)
"${pytest[@]}" -m image --basetemp="$tmp/kiosk-test-image" >"$log" 2>&1 &
image_pid=$!
# Stop the image run too if this one is interrupted.
trap 'kill "$image_pid" 2>/dev/null' INT TERM

"${pytest[@]}" -m "not image" -n 2 --dist loadfile --basetemp="$tmp/kiosk-test-rest"
rest=$?
echo "test: everything but the image done in $(($(date +%s) - started)) s (exit $rest); waiting for the image tests"
wait "$image_pid"
image=$?
echo "---- the image tests ($log) ----"
cat "$log"
echo "test: all done in $(($(date +%s) - started)) s (image tests: exit $image; the rest: exit $rest)"
# pytest's 5 is "nothing collected": not a failure for one of the two halves
((rest == 5)) && rest=0
((image == 5)) && image=0
exit $((rest || image))
