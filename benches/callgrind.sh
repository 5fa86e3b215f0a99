#!/usr/bin/env bash
# Instructions per message pair (one send then one receive in one thread), counted
# exactly by valgrind's callgrind whatever the machine's noise: each case of
# benches/instructions.rs runs at two pair counts, and the difference of the two totals
# over the difference of the counts is the per-pair cost (setup and teardown cancel).
#
# Usage: benches/callgrind.sh [CASE...]   (default: every case)
# Needs valgrind. Prints one line per case: its name and instructions per pair.
set -euo pipefail
cd "$(dirname "$0")/.."

LOW=${LOW:-100000}
HIGH=${HIGH:-200000}
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    cases=(spsc-heap spsc-shm spsc-shm-64 rtrb rtrb-64 mpmc-heap mpmc-shm array-queue)
fi

bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
    grep -o "\"executable\":\"[^\"]*/instructions-[^\"]*\"" | cut -d\" -f4 | tail -1)
[ -x "$bin" ] || { echo "could not build the instructions bench" >&2; exit 1; }

total() { # CASE PAIRS -> instructions of the whole run
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>&1
    awk '/^summary:/ { print $2 }' "$out"
    rm -f "$out"
}

printf '%-14s %s\n' case instructions/pair
for case in "${cases[@]}"; do
    low=$(total "$case" "$LOW")
    high=$(total "$case" "$HIGH")
    awk -v c="$case" -v l="$low" -v h="$high" -v n=$((HIGH - LOW)) \
        'BEGIN { printf "%-14s %.1f\n", c, (h - l) / n }'
done
