#!/bin/sh
# run-blob.sh - every example compiles to a blob (the verifier always runs
# in mpk build) that mpk dump reads back and validates, for several worker
# counts; and the real models stay within the sizes the design promises:
# Qwen3-8B builds in well under a second (bench/ measures the 100 ms
# target; a test is no place for timing) into a blob under 8 MB. The fuzz
# corpus's named blobs give the messages tests/fuzz/blob-messages lists.
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
# the fuzz corpus's named blobs still test what their names say: each one
# refused with the message tests/fuzz/blob-messages gives it, the others read
c=tests/fuzz/blob-corpus
for f in "$c"/*; do
    n=${f#"$c"/}
    case $n in *[!0-9a-f]*) ;; *) continue ;; esac # the fuzzer's finds: SHA-1 names
    [ -f "$f" ] || continue
    want=$(awk -v n="$n: " 'index($0, n) == 1 { print substr($0, length(n) + 1) }' tests/fuzz/blob-messages)
    "$bin" dump "$f" >/dev/null 2>"$tmp/err"
    st=$?
    got=$(sed "s|^$f: ||" "$tmp/err")
    if [ -z "$want" ] && [ $st -eq 0 ] && [ ! -s "$tmp/err" ]; then
        pass=$((pass + 1))
    elif [ -n "$want" ] && [ $st -ne 0 ] && [ "$got" = "$want" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        [ -n "$want" ] && want="'$want'" || want="no message"
        echo "FAIL $f: exit $st, '$got'; tests/fuzz/blob-messages wants $want"
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
