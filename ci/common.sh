# Sourced by the ci/*.sh scripts: runs a cargo test command, shows its output, and fails
# if it failed or if it ran fewer tests than it must (at least one, or MIN_PASSED; and
# with MIN_SEEN, at least that many passed or ignored).
# shellcheck shell=bash

# run_tests LABEL CMD...: run CMD, then require at least MIN_PASSED (default 1) passed
# tests in its output, and, when MIN_SEEN is set, at least MIN_SEEN tests passed or
# ignored: a test that a cfg compiles out is neither, and is counted missing.
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
    local ignored
    ignored=$(awk '/^test result: /{for (i = 1; i <= NF; i++) if ($i ~ /^ignored/) n += $(i-1)} END{print n + 0}' "$log")
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
    if [ -n "${MIN_SEEN:-}" ] && [ $((passed + ignored)) -lt "$MIN_SEEN" ]; then
        echo "== $label: $passed passed and $ignored ignored, expected at least $MIN_SEEN in all"
        exit 1
    fi
    echo "== $label: $passed tests passed ($ignored ignored)"
}

# count_tests CARGO_TEST_ARGS... [-- FILTER]: how many tests a native `cargo test` with
# these arguments lists (the tests that exist, whatever runs them).
count_tests() {
    cargo test --locked "$@" --list 2>/dev/null | grep -c ': test$'
}
