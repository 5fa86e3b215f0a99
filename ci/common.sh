# Sourced by the ci/*.sh scripts: runs a cargo test command, shows its output, and fails
# if it failed or if it ran fewer tests than it must (at least one, or MIN_PASSED).
# shellcheck shell=bash

# run_tests LABEL CMD...: run CMD, then require at least MIN_PASSED (default 1) passed
# tests in its output.
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
    local min=${MIN_PASSED:-1}
    if [ "$passed" -lt "$min" ]; then
        echo "== $label: $passed tests passed, expected at least $min"
        exit 1
    fi
    echo "== $label: $passed tests passed"
}
