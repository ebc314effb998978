#!/bin/sh
# run-parity.sh - the whole pipeline against HF transformers, without a GPU.
#
# For every model in tests/data (made by tools/hf_reference.py on a machine
# with torch and transformers: random weights rounded to bf16, HF run in
# fp32): mpk import its config.json, mpk build it for several worker counts
# (which changes tiles, KV chunks and placement), run mpk-run --cpu under
# several task-order seeds, and require
#   - the greedy tokens to equal HF's (up to and including an end-of-sequence
#     id, where mpk-run stops), and
#   - the logits at the last prompt position within relative L2 error 1e-2.
# The same at --tp 2 and 4 (the CPU executor runs every rank), for the
# models whose heads, kv heads, intermediate size and vocabulary divide;
# the others must be refused with an error that names what cannot be split.
# Run from the repository root: sh tests/run-parity.sh BIN/mpk BIN/mpk-run CMP
unset MPK_PATH
. "$(dirname "$0")/lib.sh" # ref_info
mpk=${1:?usage: sh tests/run-parity.sh MPK MPK-RUN LOGITS_CMP}
run=${2:?usage: sh tests/run-parity.sh MPK MPK-RUN LOGITS_CMP}
cmp=${3:?usage: sh tests/run-parity.sh MPK MPK-RUN LOGITS_CMP}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
TOL=1e-2

for dir in tests/data/*/; do
    name=$(basename "$dir")
    [ -f "$dir/config.json" ] || continue
    if ! "$mpk" import "$dir/config.json" -o "$tmp/$name.mpk" >"$tmp/log" 2>&1; then
        fail=$((fail + 1)); echo "FAIL $name: mpk import"; sed 's/^/    /' "$tmp/log"; continue
    fi
    ref_info "$dir" "$tmp/$name.mpk" # prompt, n, np, vocab, expect
    # one GPU at four worker counts, then tensor parallel at 2 and 4 ranks
    # (which a model must divide: heads, kv heads, intermediate, vocab)
    for cfg in w1 w5 w8 w132 tp2-w5 tp2-w132 tp4-w5 tp4-w132; do
        workers=${cfg##*w}
        tp=1
        case $cfg in tp*) tp=${cfg#tp}; tp=${tp%%-*} ;; esac
        blob="$tmp/$name-$cfg.mpkb"
        label="workers=$workers"
        [ "$tp" -gt 1 ] && label="tp=$tp workers=$workers"
        divides=yes
        for key in num_attention_heads num_key_value_heads intermediate_size vocab_size; do
            v=$(sed -n "s/.*\"$key\": *\([0-9]*\).*/\1/p" "$dir/config.json" | head -1)
            [ $((v % tp)) -eq 0 ] || divides=no
        done
        "$mpk" build --workers=$workers --tp=$tp "$tmp/$name.mpk" -o "$blob" >"$tmp/log" 2>&1
        rc=$?
        if [ $divides = no ]; then
            # the refusal: exit 1, naming the op that cannot be split
            if [ $rc -eq 1 ] && grep -q "error: --tp $tp: cannot shard" "$tmp/log"; then
                pass=$((pass + 1)); echo "parity: $name $label: refused as it should be ($(grep -o 'cannot shard [a-z]*' "$tmp/log" | head -1))"
            else
                fail=$((fail + 1)); echo "FAIL $name: mpk build $label should refuse (exit $rc)"; sed 's/^/    /' "$tmp/log"
            fi
            continue
        fi
        if [ $rc -ne 0 ]; then
            fail=$((fail + 1)); echo "FAIL $name: mpk build $label"; sed 's/^/    /' "$tmp/log"
            continue
        fi
        for seed in 0 1 2; do
            what="$name $label seed=$seed"
            got=$("$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --order-seed $seed \
                  --dump-logits "$tmp/logits.f32" 2>"$tmp/log")
            if [ $? -ne 0 ]; then
                fail=$((fail + 1)); echo "FAIL $what: mpk-run"; sed 's/^/    /' "$tmp/log"; continue
            fi
            if [ "$got" != "$expect" ]; then
                fail=$((fail + 1)); echo "FAIL $what: tokens"; echo "    got  $got"; echo "    want $expect"
                continue
            fi
            if ! rel=$("$cmp" "$tmp/logits.f32" $((np - 1)) "$dir/last_logits.f32" 0 "$vocab" $TOL); then
                fail=$((fail + 1)); echo "FAIL $what: logits relative L2 error $rel > $TOL"; continue
            fi
            pass=$((pass + 1))
        done
        echo "parity: $name $label: tokens identical over 3 seeds, last-prompt logits rel L2 $rel"
    done
done
echo "parity: $pass passed, $fail failed"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]
