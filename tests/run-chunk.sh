#!/bin/sh
# run-chunk.sh - prompts in chunk steps (mpk build --chunk C) on the CPU
# executor, against the one-token-per-step path and HF transformers.
#
# For every model in tests/data: mpk import it, build it once plainly and
# once per chunk size C in 2, 3, 4, 16 (the prompts have 5 to 9 tokens, so
# the chunks split them unevenly, and 16 holds a whole prompt in one padded
# step) at two worker counts (and at --tp 2 where the model divides), run
# mpk-run --cpu under two task-order seeds, and require
#   - the greedy tokens to equal HF's and those of the same blob run with
#     --no-chunk (the prompt one token per step),
#   - the logits at the last prompt position (row 0 of a chunked
#     --dump-logits) within relative L2 error 1e-2 of HF's and of the
#     one-token path's.
# Then split-K (--split-k) on llama-tp against HF and the unsplit blob.
# Then the refusals: --chunk out of range, -D n with --chunk, a model
# without param n, a decode graph with n > 1.
# Run from the repository root: sh tests/run-chunk.sh BIN/mpk BIN/mpk-run CMP
unset MPK_PATH
. "$(dirname "$0")/lib.sh" # ref_info
mpk=${1:?usage: sh tests/run-chunk.sh MPK MPK-RUN LOGITS_CMP}
run=${2:?usage: sh tests/run-chunk.sh MPK MPK-RUN LOGITS_CMP}
cmp=${3:?usage: sh tests/run-chunk.sh MPK MPK-RUN LOGITS_CMP}
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
    tps=1
    divides=yes
    for key in num_attention_heads num_key_value_heads intermediate_size vocab_size; do
        v=$(sed -n "s/.*\"$key\": *\([0-9]*\).*/\1/p" "$dir/config.json" | head -1)
        [ $((v % 2)) -eq 0 ] || divides=no
    done
    [ $divides = yes ] && tps="1 2"
    for tp in $tps; do
        for workers in 5 132; do
            for c in 2 3 4 16; do
                what="$name tp=$tp workers=$workers chunk=$c"
                blob="$tmp/$name-c.mpkb"
                if ! "$mpk" build --workers=$workers --tp=$tp --chunk $c "$tmp/$name.mpk" -o "$blob" >"$tmp/log" 2>&1; then
                    fail=$((fail + 1)); echo "FAIL $what: mpk build"; sed 's/^/    /' "$tmp/log"; continue
                fi
                one=$("$run" "$blob" --weights "$dir" --cpu --no-chunk --prompt-ids "$prompt" -n "$n" \
                      --dump-logits "$tmp/one.f32" 2>"$tmp/log")
                if [ $? -ne 0 ] || [ "$one" != "$expect" ]; then
                    fail=$((fail + 1)); echo "FAIL $what: --no-chunk"; echo "    got  $one"; echo "    want $expect"
                    sed 's/^/    /' "$tmp/log"; continue
                fi
                for seed in 0 1; do
                    got=$("$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --order-seed $seed \
                          --dump-logits "$tmp/chunk.f32" 2>"$tmp/log")
                    if [ $? -ne 0 ]; then
                        fail=$((fail + 1)); echo "FAIL $what seed=$seed: mpk-run"; sed 's/^/    /' "$tmp/log"; continue
                    fi
                    if [ "$got" != "$expect" ]; then
                        fail=$((fail + 1)); echo "FAIL $what seed=$seed: tokens"; echo "    got  $got"
                        echo "    want $expect"; continue
                    fi
                    if ! hf=$("$cmp" "$tmp/chunk.f32" 0 "$dir/last_logits.f32" 0 "$vocab" $TOL) ||
                       ! self=$("$cmp" "$tmp/chunk.f32" 0 "$tmp/one.f32" $((np - 1)) "$vocab" $TOL); then
                        fail=$((fail + 1)); echo "FAIL $what seed=$seed: last-prompt logits rel L2 $hf (HF), $self (one token a step) > $TOL"
                        continue
                    fi
                    pass=$((pass + 1))
                done
            done
            echo "chunk: $name tp=$tp workers=$workers: chunks 2 3 4 16 give HF's tokens, last-prompt logits rel L2 $hf (HF), $self (one token a step)"
        done
    done
done

# split-K (mpk build --split-k P): llama-tp, whose K are whole slabs of 32,
# its chunk graph's matvecs in P parts (matvec_part, part_sum; 64 clips to
# K / 32): HF's tokens under three order seeds, and the last prompt
# position's logits within TOL of HF's and of the unsplit chunk blob's
dir=tests/data/llama-tp
ref_info "$dir" "$tmp/llama-tp.mpk"
for workers in 5 132; do
    for c in 3 16; do
        base="$tmp/ltp-c$c-w$workers.mpkb"
        "$mpk" build --workers=$workers --chunk $c "$tmp/llama-tp.mpk" -o "$base" >"$tmp/log" 2>&1 &&
            "$run" "$base" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --dump-logits "$tmp/base.f32" \
                >/dev/null 2>"$tmp/log" ||
            { fail=$((fail + 1)); echo "FAIL llama-tp chunk=$c workers=$workers: unsplit"; sed 's/^/    /' "$tmp/log"; continue; }
        for k in 2 3 64; do
            what="llama-tp workers=$workers chunk=$c --split-k=$k"
            blob="$tmp/ltp-s.mpkb"
            if ! "$mpk" build --workers=$workers --chunk $c --split-k=$k "$tmp/llama-tp.mpk" -o "$blob" >"$tmp/log" 2>&1; then
                fail=$((fail + 1)); echo "FAIL $what: mpk build"; sed 's/^/    /' "$tmp/log"; continue
            fi
            parts=$("$mpk" dump "$blob" | grep -c ' matvec_part ')
            sums=$("$mpk" dump "$blob" | grep -c ' part_sum ')
            if [ "$parts" -eq 0 ] || [ "$sums" -eq 0 ]; then
                fail=$((fail + 1)); echo "FAIL $what: $parts matvec_part and $sums part_sum tasks"; continue
            fi
            for seed in 0 1 2; do
                got=$("$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --order-seed $seed \
                      --dump-logits "$tmp/split.f32" 2>"$tmp/log")
                if [ $? -ne 0 ] || [ "$got" != "$expect" ]; then
                    fail=$((fail + 1)); echo "FAIL $what seed=$seed: tokens"; echo "    got  $got"
                    echo "    want $expect"; sed 's/^/    /' "$tmp/log"; continue
                fi
                if ! hf=$("$cmp" "$tmp/split.f32" 0 "$dir/last_logits.f32" 0 "$vocab" $TOL) ||
                   ! self=$("$cmp" "$tmp/split.f32" 0 "$tmp/base.f32" 0 "$vocab" $TOL); then
                    fail=$((fail + 1)); echo "FAIL $what seed=$seed: last-prompt logits rel L2 $hf (HF), $self (unsplit) > $TOL"
                    continue
                fi
                pass=$((pass + 1))
            done
            echo "chunk: $what: $parts matvec_part, $sums part_sum tasks; HF's tokens, last-prompt logits rel L2 $hf (HF), $self (unsplit)"
        done
    done
done

# Ops the data flow leaves independent stay so: the arena planner must not
# give one the bytes of a tensor that another of them, or one after it,
# still reads (memory.c), which would order them. In layer 0 of every
# chunk graph the up projection waits for the event the gate projection
# waits for (not for the silu that reads gate's output), and with
# --split-k the q, k and v parts wait for one event (not for each other's
# sums).
waits() { # BLOB LABEL-REGEX: the distinct events the chunk graph's matvec (or matvec_part) tasks of that label wait for
    "$mpk" dump "$1" | awk -v re="$2" '/^chunk graph/ { c = 1 } c && $1 == "task" && $3 ~ /^matvec/ && $4 ~ re {
        for (i = 5; i < NF; i++) if ($i == "wait") print $(i + 1) }' | sort -u | tr '\n' ' '
}
for m in qwen3-tiny llama-tp; do
    for k in 1 2; do
        what="$m chunk=16 --split-k=$k"
        if ! "$mpk" build --chunk 16 --split-k=$k "$tmp/$m.mpk" -o "$tmp/ind.mpkb" >"$tmp/log" 2>&1; then
            fail=$((fail + 1)); echo "FAIL $what: mpk build"; sed 's/^/    /' "$tmp/log"; continue
        fi
        g=$(waits "$tmp/ind.mpkb" 'layers\.0\.mlp\.gate_proj$') u=$(waits "$tmp/ind.mpkb" 'layers\.0\.mlp\.up_proj$')
        if [ -z "$g" ] || [ "$g" != "$u" ]; then
            fail=$((fail + 1)); echo "FAIL $what: gate_proj waits for $g, up_proj for $u (want one event)"
        else
            pass=$((pass + 1))
        fi
        qkv=$(waits "$tmp/ind.mpkb" 'layers\.0\.self_attn\.[qkv]_proj$')
        if [ "$(echo $qkv | wc -w)" -ne 1 ]; then
            fail=$((fail + 1)); echo "FAIL $what: the q, k and v projections wait for $qkv (want one event)"
        else
            pass=$((pass + 1))
        fi
    done
done
echo "chunk: gate and up, and q, k and v, wait for one event in layer 0 (qwen3-tiny, llama-tp, split 1 and 2)"

# refusals: exit status and a line that names the problem
refuse() { # WANT_STATUS PATTERN CMD...
    st=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq "$st" ] && grep -q -- "$pat" "$tmp/out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $* (exit $rc, want $st and '$pat')"; sed 's/^/    /' "$tmp/out"
    fi
}
m="$tmp/qwen3-tiny.mpk"
refuse 2 "needs a number of prompt tokens per step from 2 to" "$mpk" build --chunk 1 "$m" -o "$tmp/x.mpkb"
refuse 2 "needs a number of prompt tokens per step from 2 to" "$mpk" build --chunk x "$m" -o "$tmp/x.mpkb"
refuse 2 "both set n" "$mpk" build -D n=4 --chunk 4 "$m" -o "$tmp/x.mpkb"
refuse 1 "must be i32\[1\] in the decode graph" "$mpk" build -D n=4 "$m" -o "$tmp/x.mpkb"
sed -e 's/^param n = 1$//' -e 's/i32\[n\]/i32[1]/' -e 's/slice(x, 0, n - 1, n)/x/' "$m" >"$tmp/old.mpk"
refuse 1 "needs a token-count param 'n'" "$mpk" build --chunk 4 "$tmp/old.mpk" -o "$tmp/x.mpkb"
[ ! -e "$tmp/x.mpkb" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL a refused build left a blob"; }
# a model written for one token a step still builds and runs
if "$mpk" build "$tmp/old.mpk" -o "$tmp/old.mpkb" >"$tmp/log" 2>&1 &&
   [ "$("$run" "$tmp/old.mpkb" --weights tests/data/qwen3-tiny --cpu --prompt-ids "$(cat tests/data/qwen3-tiny/prompt.ids)" -n 3)" = \
     "$(cat tests/data/qwen3-tiny/generated.ids | tr ' ' '\n' | head -3 | tr '\n' ' ' | sed 's/ $//')" ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL a model with i32[1] inputs and no param n"; sed 's/^/    /' "$tmp/log"
fi
echo "chunk: $pass passed, $fail failed"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]
