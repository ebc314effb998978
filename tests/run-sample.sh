#!/bin/sh
# run-sample.sh - sampling through mpk-run --cpu on the tiny models of
# tests/data (the sampler's statistics are in tests/check_sample.c):
#   - greedy: no flags, --temperature 0, --top-k 1 give HF's tokens
#     (generated.ids), also tensor parallel (--tp 2);
#   - a seed reproduces its tokens; other seeds give others; the task order
#     (--order-seed) changes nothing;
#   - --top-k K: every sampled token is among the K largest logits of its
#     step (--dump-logits);
#   - the tokens are what the sampler's definition draws from the dumped
#     logits, step by step (sample_replay: the check the GPU's tokens get in
#     tests/run-gpu.sh);
#   - generation_config.json: do_sample and its fields are the defaults
#     (max_new_tokens the default of -n, cut to fit the cache),
#     flags override them;
#   - bad values are refused with a message and exit status 2.
# Run from the repository root:
#     sh tests/run-sample.sh bin/mpk bin/mpk-run build/tests/sample_replay
# Prints each failing case and "sample: N passed, M failed"; exits 1 on failure.
usage='usage: sh tests/run-sample.sh BIN/mpk BIN/mpk-run BUILD/tests/sample_replay'
bin=${1:?$usage}
run=${2:?$usage}
replay=${3:?$usage}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh" # ok, no, same, expect

for m in qwen3-tiny llama-tiny; do
    d=tests/data/$m
    "$bin" import "$d/config.json" -o "$tmp/$m.mpk" && "$bin" build "$tmp/$m.mpk" -o "$tmp/$m.mpkb" >/dev/null ||
        no "build $m"
    ids=$(cat "$d/prompt.ids")
    n=$(wc -w <"$d/generated.ids")
    r="$run $tmp/$m.mpkb --weights $d --cpu --prompt-ids $ids -n $n"
    same "$m: greedy by default" "$d/generated.ids" $r
    same "$m: --temperature 0" "$d/generated.ids" $r --temperature 0 --top-p 0.5 --seed 9
    same "$m: --top-k 1" "$d/generated.ids" $r --temperature 1.5 --top-k 1 --seed 9

    $r --temperature 1 --seed 3 >"$tmp/s3" 2>"$tmp/err" || no "$m: --temperature 1 --seed 3"
    same "$m: --seed 3 again" "$tmp/s3" $r --temperature 1 --seed 3
    same "$m: --seed 3, another task order" "$tmp/s3" $r --temperature 1 --seed 3 --order-seed 7
    same "$m: --seed 3, tasks in order" "$tmp/s3" $r --temperature 1 --seed 3 --order-seed 0
    $r --temperature 1 --seed 4 >"$tmp/s4" 2>&1
    ! cmp -s "$tmp/s3" "$tmp/s4" && ok || no "$m: --seed 3 and --seed 4 gave the same tokens: $(cat "$tmp/s3")"
    ! cmp -s "$tmp/s3" "$d/generated.ids" && ok || no "$m: --temperature 1 gave the greedy tokens"

    # --top-k 3: each generated token among the 3 largest logits of the step
    # that made it (row np - 1 + j for the j-th); the sampled tokens' rows
    # come from the steps run, so -n steps-1 rows follow the prompt.
    vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$d/config.json")
    np=$(echo "$ids" | tr ',' ' ' | wc -w)
    $r --temperature 2 --top-k 3 --seed 11 --dump-logits "$tmp/l.f32" >"$tmp/k3" 2>"$tmp/err" || no "$m: --top-k 3"
    od -An -v -f -w4 "$tmp/l.f32" | awk -v V="$vocab" -v np="$np" -v toks="$(cat "$tmp/k3")" '
        BEGIN { nt = split(toks, t, " ") }
        { row = int((NR - 1) / V); col = (NR - 1) % V; x[row, col] = $1 + 0 }
        END {
            bad = 0
            for (j = 1; j <= nt; j++) {
                row = np - 2 + j; tok = t[j]; above = 0
                for (c = 0; c < V; c++) if (x[row, c] > x[row, tok]) above++
                if (above >= 3) { print "token " j " (" tok ") has " above " larger logits"; bad = 1 }
            }
            exit bad
        }' >"$tmp/awk" && ok || { no "$m: --top-k 3 drew outside the top 3"; sed 's/^/    /' "$tmp/awk"; }
    ! cmp -s "$tmp/k3" "$d/generated.ids" && ok || no "$m: --top-k 3 at temperature 2 gave the greedy tokens"

    # every token is the definition's draw from its step's logits
    for set in "1 0 1 0 3" "0.7 20 0.9 0 4" "1.5 0 0.8 0.02 5" "2 7 1 0.1 6" "0.9 40 0.95 0.05 18446744073709551615"; do
        set -- $set
        $r --temperature "$1" --top-k "$2" --top-p "$3" --min-p "$4" --seed "$5" --dump-logits "$tmp/r.f32" \
            >"$tmp/r.ids" 2>"$tmp/err" || no "$m: sampling $set"
        "$replay" "$tmp/r.f32" "$vocab" "$np" "$(cat "$tmp/r.ids")" "$@" >"$tmp/replay" 2>&1 && ok ||
            { no "$m: sampling $set: the tokens are not the sampler's draws"; sed 's/^/    /' "$tmp/replay"; }
    done

    # generation_config.json: do_sample true and its fields are the defaults
    g=$tmp/$m-gc
    mkdir -p "$g" && cp "$d/config.json" "$d/model.safetensors" "$g/"
    $r --temperature 0.8 --top-k 20 --top-p 0.9 --seed 5 >"$tmp/want" 2>"$tmp/err" || no "$m: flags"
    rg="$run $tmp/$m.mpkb --weights $g --cpu --prompt-ids $ids -n $n"
    printf '{"do_sample": true, "temperature": 0.8, "top_k": 20, "top_p": 0.9}\n' >"$g/generation_config.json"
    same "$m: generation_config.json's sampling" "$tmp/want" $rg --seed 5
    same "$m: --temperature 0 over generation_config.json" "$d/generated.ids" $rg --temperature 0
    expect 0 'sampling: temperature 0.8, top-k 20, top-p 0.9, min-p 0, seed 5' $rg --seed 5 --stats
    expect 0 'mean step .* median step .* p99 step' $rg --seed 5 --stats
    $r --temperature 0.8 --top-k 7 --top-p 0.9 --seed 5 >"$tmp/want7" 2>"$tmp/err"
    same "$m: --top-k over generation_config.json" "$tmp/want7" $rg --seed 5 --top-k 7
    # do_sample false: greedy whatever else it says; absent fields: transformers' defaults
    printf '{"do_sample": false, "temperature": 0.8, "top_k": 20}\n' >"$g/generation_config.json"
    same "$m: do_sample false" "$d/generated.ids" $rg
    expect 0 'greedy decoding' $rg --stats
    $r --temperature 1 --top-k 50 --seed 2 >"$tmp/want" 2>"$tmp/err"
    printf '{"do_sample": true}\n' >"$g/generation_config.json"
    same "$m: do_sample true alone: temperature 1, top-k 50" "$tmp/want" $rg --seed 2
    expect 0 'sampling: temperature 1, top-k 50, top-p 1, min-p 0, seed 2' $rg --seed 2 --stats
    $r --temperature 1 --seed 2 >"$tmp/want" 2>"$tmp/err"
    printf '{"do_sample": true, "top_k": null, "top_p": null}\n' >"$g/generation_config.json"
    same "$m: top_k null is off" "$tmp/want" $rg --seed 2
    expect 0 'sampling: temperature 1, top-k 0, top-p 1, min-p 0, seed 2' $rg --seed 2 --stats
    # max_new_tokens is the default of -n; -n wins; a default past the KV
    # cache is cut to fit (an explicit -n there is refused, as before)
    rd="$run $tmp/$m.mpkb --weights $d --cpu --prompt-ids $ids"
    rn="$run $tmp/$m.mpkb --weights $g --cpu --prompt-ids $ids"
    $rd -n 3 >"$tmp/want3" 2>"$tmp/err" || no "$m: -n 3"
    $rd -n 5 >"$tmp/want5" 2>"$tmp/err" || no "$m: -n 5"
    printf '{"max_new_tokens": 3}\n' >"$g/generation_config.json"
    same "$m: max_new_tokens 3 is the default of -n" "$tmp/want3" $rn
    same "$m: -n 5 over max_new_tokens 3" "$tmp/want5" $rn -n 5
    printf '{"max_new_tokens": 1000000}\n' >"$g/generation_config.json"
    expect 0 'cpu: ' $rn --stats
    expect 1 'need .* positions' $rn -n 1000000
done

# tensor parallel: greedy is still greedy, and a seed reproduces its tokens
d=tests/data/qwen3-tp
"$bin" import "$d/config.json" -o "$tmp/tp.mpk" && "$bin" build --tp 2 "$tmp/tp.mpk" -o "$tmp/tp2.mpkb" >/dev/null ||
    no "build qwen3-tp --tp 2"
r="$run $tmp/tp2.mpkb --weights $d --cpu --prompt-ids $(cat "$d/prompt.ids") -n $(wc -w <"$d/generated.ids")"
same "qwen3-tp --tp 2: --top-k 1" "$d/generated.ids" $r --temperature 0.9 --top-k 1
$r --temperature 1 --min-p 0.01 --seed 8 >"$tmp/tp-s8" 2>"$tmp/err" || no "qwen3-tp --tp 2: sampling"
same "qwen3-tp --tp 2: --seed 8 again, another task order" "$tmp/tp-s8" $r --temperature 1 --min-p 0.01 --seed 8 \
    --order-seed 3
$r --temperature 1.2 --top-k 30 --seed 8 --dump-logits "$tmp/tp.f32" >"$tmp/tp.ids" 2>"$tmp/err" || no "qwen3-tp: dump"
"$replay" "$tmp/tp.f32" 512 "$(tr ',' ' ' <"$d/prompt.ids" | wc -w)" "$(cat "$tmp/tp.ids")" 1.2 30 1 0 8 \
    >"$tmp/replay" 2>&1 && ok || { no "qwen3-tp --tp 2: not the sampler's draws over all ranks' logits"; cat "$tmp/replay"; }

# bad values
q="$run $tmp/qwen3-tiny.mpkb --weights tests/data/qwen3-tiny --cpu --prompt-ids 1"
for t in -1 -0.5 nan inf 1e39 x ''; do
    expect 2 "--temperature needs a finite number >= 0" $q --temperature "$t"
done
for k in -1 x 1.5 2147483648; do
    expect 2 "--top-k needs a number of tokens >= 0" $q --top-k "$k"
done
for p in 0 -0.1 1.01 nan x; do
    expect 2 "--top-p needs a probability in (0, 1\]" $q --top-p "$p"
done
for p in 1 -0.1 2 nan x; do
    expect 2 "--min-p needs a probability in \[0, 1)" $q --min-p "$p"
done
expect 2 "--seed needs a non-negative integer" $q --seed -1
expect 2 "--order-seed needs a non-negative integer" $q --order-seed x
expect 2 "Try 'mpk-run --help'" $q --top-p 0

echo "sample: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
