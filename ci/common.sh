# Sourced by the ci/*.sh scripts: runs a cargo test command, shows its output, and fails
# if it failed or if it ran zero tests.
# shellcheck shell=bash

# run_tests LABEL CMD...: run CMD, then require at least one passed test in its output.
run_tests() {
    local label=$1
    shift
    local log
    log=$(mktemp)
    echo "== $label: $*"
    set +e
    "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    set -e
    local passed
    passed=$(awk '/^test result: /{for (i = 1; i <= NF; i++) if ($i ~ /^passed/) n += $(i-1)} END{print n + 0}' "$log")
    rm -f "$log"
    if [ "$status" -ne 0 ]; then
        echo "== $label: FAILED (exit $status)"
        exit "$status"
    fi
    if [ "$passed" -eq 0 ]; then
        echo "== $label: ran zero tests"
        exit 1
    fi
    echo "== $label: $passed tests passed"
}
