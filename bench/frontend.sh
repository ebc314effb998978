#!/bin/sh
# bench/frontend.sh [RUNS] - how long the front end takes on each example:
# the median wall time of `mpk check` and of `mpk build --emit=graph` over
# RUNS runs (default 50), as measured by mpk --time (process start-up not
# included), plus the median of the whole process measured from outside.
# Run from the repository root after `make`.
set -eu
runs=${1:-50}
bin=bin/mpk
[ -x "$bin" ] || { echo "bench/frontend.sh: build first (make)" >&2; exit 2; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

now_ns() { date +%s%N; }

printf '%-28s %10s %10s %12s\n' model check_ms build_ms process_ms
for f in examples/*.mpk; do
    check=$(i=0; while [ $i -lt "$runs" ]; do
        "$bin" check --time "$f" 2>&1 | sed -n 's/.*total \([0-9.]*\) ms/\1/p'; i=$((i + 1)); done | median)
    build=$(i=0; while [ $i -lt "$runs" ]; do
        "$bin" build --emit=graph --time -o /dev/null "$f" 2>&1 | sed -n 's/.*total \([0-9.]*\) ms/\1/p'; i=$((i + 1)); done | median)
    proc=$(i=0; while [ $i -lt "$runs" ]; do
        t0=$(now_ns); "$bin" check "$f"; t1=$(now_ns); echo "($t1 - $t0) / 1000000" | bc -l; i=$((i + 1)); done | median)
    printf '%-28s %10.2f %10.2f %12.2f\n' "$(basename "$f")" "$check" "$build" "$proc"
done
