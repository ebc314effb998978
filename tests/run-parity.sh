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
# Run from the repository root: sh tests/run-parity.sh BIN/mpk BIN/mpk-run CMP
unset MPK_PATH
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
    prompt=$(cat "$dir/prompt.ids")
    want=$(cat "$dir/generated.ids")
    n=$(echo "$want" | wc -w)
    np=$(echo "$prompt" | tr ',' ' ' | wc -w)
    vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$dir/config.json" | head -1)
    if ! "$mpk" import "$dir/config.json" -o "$tmp/$name.mpk" >"$tmp/log" 2>&1; then
        fail=$((fail + 1)); echo "FAIL $name: mpk import"; sed 's/^/    /' "$tmp/log"; continue
    fi
    # the reference stops at nothing; mpk-run stops at the model's eos ids
    eos=$(sed -n 's/^param eos = \[*\([0-9, ]*\)\]*$/\1/p' "$tmp/$name.mpk" | tr -d ' ')
    expect=""
    for t in $want; do
        expect="$expect${expect:+ }$t"
        case ",$eos," in *",$t,"*) break ;; esac
    done
    for workers in 1 5 8 132; do
        blob="$tmp/$name-$workers.mpkb"
        if ! "$mpk" build --workers=$workers "$tmp/$name.mpk" -o "$blob" >"$tmp/log" 2>&1; then
            fail=$((fail + 1)); echo "FAIL $name: mpk build --workers=$workers"; sed 's/^/    /' "$tmp/log"
            continue
        fi
        for seed in 0 1 2; do
            what="$name workers=$workers seed=$seed"
            got=$("$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --seed $seed \
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
        echo "parity: $name workers=$workers: tokens identical over 3 seeds, last-prompt logits rel L2 $rel"
    done
done
echo "parity: $pass passed, $fail failed"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]
