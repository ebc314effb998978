#!/bin/sh
# run-trace.sh - tools/trace-report.py on hand-written traces in the format
# mpk-run --trace writes (runtime/cuda/kernel.cu, write_trace; mpk-run(1)):
# for every tests/trace/NAME.json, its report must equal tests/trace/NAME.out
# byte for byte. tiny.json is the format as it is; tiny-bytes.json adds the
# optional args.bytes, tiny-phases.json the phases, tiny-labels.json is
# read with the options in tiny-labels.args (--labels). Their numbers are
# worked out by hand in tests/trace/README. Skipped, with a line saying so, without python3.
# Run from the repository root: sh tests/run-trace.sh [--update]
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
if ! command -v python3 >/dev/null 2>&1; then
    echo "trace: no python3: tools/trace-report.py not tested"
    exit 0
fi
pass=0 fail=0
for j in tests/trace/*.json; do
    want=${j%.json}.out
    opts=
    [ -f "${j%.json}.args" ] && opts=$(cat "${j%.json}.args")
    # shellcheck disable=SC2086
    if ! python3 tools/trace-report.py $opts "$j" >"$tmp/out" 2>&1; then
        fail=$((fail + 1)); echo "FAIL $j: trace-report.py failed"; sed 's/^/    /' "$tmp/out"
    elif [ "$1" = --update ]; then
        cmp -s "$tmp/out" "$want" || { cp "$tmp/out" "$want"; echo "updated $want"; }
        pass=$((pass + 1))
    elif cmp -s "$tmp/out" "$want"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $j: the report differs from $want"; diff -u "$want" "$tmp/out"
    fi
done
# refused NAME JSON PATTERN WHAT: trace-report.py on a file NAME.json
# holding JSON fails, with a message matching PATTERN
refused() {
    printf '%s\n' "$2" >"$tmp/$1.json"
    if python3 tools/trace-report.py "$tmp/$1.json" >"$tmp/out" 2>&1; then
        fail=$((fail + 1)); echo "FAIL $4 is accepted"
    elif grep -q "$3" "$tmp/out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $4:"; sed 's/^/    /' "$tmp/out"
    fi
}
# a file that is not a trace, with its name; a phase that is not a number,
# with the file and the event
refused bad '{"traceEvents": 3}' "bad.json: no traceEvents list" "a file without a traceEvents list"
refused badphase '{"traceEvents":[{"name":"x","cat":"matvec","ph":"X","tid":0,"ts":0,"dur":1,"args":{"step":0,"wait":"abc"}}]}' \
    "badphase.json: event 0: .*numbers in args.bytes and its phases" "a trace whose args.wait is not a number"
echo "trace: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
