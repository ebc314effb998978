#!/bin/sh
# build.sh - how long mpk build takes, and how big the blob is, for each
# example: the median of N runs of the whole process (default 21), and the
# per-pass times of the median run's kind from --time.
#   sh bench/build.sh [N]
n=${1:-21}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
make -s bin/mpk || exit 1
for f in examples/*.mpk; do
    name=$(basename "$f" .mpk)
    : >"$tmp/times"
    i=0
    while [ $i -lt "$n" ]; do
        s=$(date +%s%N)
        bin/mpk build "$f" -o "$tmp/$name.mpkb" || exit 1
        e=$(date +%s%N)
        echo $(((e - s) / 1000)) >>"$tmp/times"
        i=$((i + 1))
    done
    med=$(sort -n "$tmp/times" | sed -n "$(((n + 1) / 2))p")
    min=$(sort -n "$tmp/times" | head -1)
    max=$(sort -n "$tmp/times" | tail -1)
    size=$(wc -c <"$tmp/$name.mpkb")
    echo "$name: build median $((med / 1000)).$(((med % 1000) / 100)) ms (min $((min / 1000)) ms, max $((max / 1000)) ms, $n runs), blob $size bytes"
    bin/mpk build --time --stats "$f" -o "$tmp/$name.mpkb" 2>&1 | grep -E "passes|^tasks|^events|bytes per token" | sed 's/^/    /'
done
