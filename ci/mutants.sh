#!/usr/bin/env bash
# Mutation testing of the protocol modules with cargo-mutants: every mutant (an operator
# flipped, a comparison changed, a function body replaced by a default) must make some
# test fail. A mutant that survives is a change the tests cannot see: a missing test, or
# an equivalent mutant (explained in docs/guarantees.md, "Mutation testing").
#
# Not part of .ci/run: each mutant is a build and a test run of its crate, so a group
# takes from half an hour (sync) to several hours (mpmc, stream, pool) on two cores.
#
#   ci/mutants.sh [GROUP...]     groups: sync participants spsc mpmc stream pool segment
#                                (default: sync)
#
# MUTANTS_ARGS adds options to every run: MUTANTS_ARGS="--shard 0/4" tests a quarter of
# a group's mutants (every fourth), for a group too long for one sitting;
# MUTANTS_ARGS="--iterate" tests again only the mutants the last run of a group did not
# catch (after tests were added for them). MUTANTS_JOBS (default 1) builds and tests that
# many mutants at once.
#
# The ring groups run the tests that exercise their modules, not the whole crate: the
# library's unit tests and loom-free models, the conformance suite, the process tests
# and the counters (and for MPMC, the wait set's, which asks the ring whether it is
# ready). The hostile-peer tests are left out (minutes per mutant, and what they catch
# is a panic or a hang, which the others see first), and so are the ten million message
# runs of the SPSC process tests (the million message runs take the same paths). Mutants are built without debug information: half the link time.
# Run it on an otherwise idle machine: a test slowed by other load passes the timeout and
# counts as hung, that is as caught.
# Results go to target/mutants/GROUP/mutants.out (caught.txt, missed.txt, timeout.txt,
# unviable.txt). A mutant whose tests hang past the timeout is caught too (a hang fails
# the suite); the score is (caught + timed out) / (caught + timed out + missed).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

# run GROUP CARGO_MUTANTS_ARGS...
run() {
    local group=$1
    shift
    echo "== mutants: $group"
    mkdir -p "target/mutants/$group"
    # Exit status 2 means some mutants survived, 3 that some timed out (caught: a hang
    # fails the suite): reported below, not failures of the run.
    # shellcheck disable=SC2086 # MUTANTS_ARGS is a list of options.
    cargo mutants --no-shuffle --jobs "${MUTANTS_JOBS:-1}" --timeout 30 --output "target/mutants/$group" \
        ${MUTANTS_ARGS:-} "$@" || {
        local rc=$?
        [ "$rc" -eq 2 ] || [ "$rc" -eq 3 ]
    }
    local out="target/mutants/$group/mutants.out"
    local caught missed timeout unviable
    caught=$(wc -l <"$out/caught.txt")
    missed=$(wc -l <"$out/missed.txt")
    timeout=$(wc -l <"$out/timeout.txt")
    unviable=$(wc -l <"$out/unviable.txt")
    echo "== mutants: $group: caught $caught, timed out $timeout, missed $missed (unviable $unviable)"
    if [ "$missed" -gt 0 ]; then
        echo "== missed:"
        cat "$out/missed.txt"
    fi
}

for group in "${@:-sync}"; do
    case $group in
        sync)
            # The loom-only code (the futex model, the fault switches and the loom
            # branches of the fences, the loom models themselves) is not built here:
            # ci/loom.sh tests it.
            run sync -p shm-sync -f shm-sync/src/event_count.rs -f 'shm-sync/src/futex/*.rs' \
                -f shm-sync/src/asymmetric.rs -f shm-sync/src/wait.rs -f shm-sync/src/retry.rs \
                -e shm-sync/src/futex/model.rs \
                --exclude-re 'faults::|loom_tests::|delete ! in (light_then_load|heavy)$'
            ;;
        participants)
            run participants -p shm-alloc -f shm-alloc/src/participants.rs
            ;;
        segment)
            run segment -p shm-alloc -f shm-alloc/src/segment.rs -f shm-alloc/src/header.rs
            ;;
        pool)
            # The pool and its free lists, and the typed loans of the rings over it: the
            # tests of both crates that loan, send, receive, share and reclaim chunks
            # (the ten thousand frame run left out: the others take its paths).
            run pool -p shm-alloc -p shm-ring -f 'shm-alloc/src/pool/*.rs' -f shm-ring/src/loan.rs \
                --test-package shm-alloc,shm-ring \
                -- --lib --test pool_api --test pool_model --test loan_api --test loan_processes \
                --test broadcast_chunks -- --skip ten_thousand
            ;;
        spsc)
            run spsc -p shm-ring -f 'shm-ring/src/spsc/*.rs' -f 'shm-ring/src/core/*.rs' \
                -- --lib --test conformance --test spsc_processes --test spsc_chunks \
                --test spsc_model --test counters -- --skip ten_million
            ;;
        mpmc)
            run mpmc -p shm-ring -f 'shm-ring/src/mpmc/*.rs' \
                -- --lib --test conformance --test mpmc_processes --test counters --test wait_set
            ;;
        stream)
            run stream -p shm-ring -f shm-ring/src/stream.rs \
                -- --lib --test conformance --test stream_model --test stream_open
            ;;
        *)
            echo "unknown group $group" >&2
            exit 1
            ;;
    esac
done
