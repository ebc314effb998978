#!/bin/sh
# run-blob.sh - every example compiles to a blob (the verifier always runs
# in mpk build) that mpk dump reads back and validates, for several worker
# counts; and the real models stay within the sizes the design promises:
# Qwen3-8B builds in well under a second (bench/ measures the 100 ms
# target; a test is no place for timing) into a blob under 8 MB.
# Run from the repository root: sh tests/run-blob.sh BIN/mpk
unset MPK_PATH
bin=${1:?usage: sh tests/run-blob.sh BIN/mpk}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
for f in examples/*.mpk; do
    for w in 1 16 132; do
        out="$tmp/$(basename "$f" .mpk)-$w.mpkb"
        if "$bin" build --workers=$w "$f" -o "$out" >"$tmp/log" 2>&1 && "$bin" dump "$out" >"$tmp/dump" 2>&1 &&
            grep -q "^queue $((w - 1)):" "$tmp/dump"; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1)); echo "FAIL $f --workers=$w"; sed 's/^/    /' "$tmp/log" | head -20
        fi
    done
done
# small graphs: fewer tasks than workers (most queues empty), no attention
for f in tests/blob/*.mpk; do
    if "$bin" build --workers=132 "$f" -o "$tmp/small.mpkb" >"$tmp/log" 2>&1 && "$bin" dump "$tmp/small.mpkb" >/dev/null 2>"$tmp/log"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $f"; sed 's/^/    /' "$tmp/log" | head -20
    fi
done
size=$(wc -c < "$tmp/qwen3-8b-132.mpkb")
if [ "$size" -lt 8000000 ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL qwen3-8b blob is $size bytes (limit 8 MB)"
fi
echo "blob: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
