#!/bin/sh
# run-demo.sh - the demo model (examples/demo, a checkpoint directory that
# tools/train-demo.py trained) against HF transformers, without a GPU.
#
# mpk import DIR, mpk build at two worker counts, and for each prompt that
# tools/train-demo.py recorded in tests/data/demo-ref (HF's greedy tokens
# from the bf16 weights, computed in float32, up to an EOS id):
#   - mpk tokenize gives HF's prompt ids (with the <|endoftext|> that the
#     tokenizer's post-processor puts first);
#   - mpk-run --cpu --temperature 0 --prompt-ids gives HF's greedy tokens, under three task-order
#     seeds, and the logits at the last prompt position within relative L2
#     error 1e-2 of HF's;
#   - mpk-run --cpu --prompt TEXT --ids gives the same tokens, and without
#     --ids the text that mpk detokenize gives for them;
# and mpk tokenize --chat renders and tokenizes the tests/data/tok-chat
# conversations as HF's apply_chat_template does (chat-NAME.ids).
# Run from the repository root: sh tests/run-demo.sh BIN/mpk BIN/mpk-run CMP [DIR REF]
unset MPK_PATH
mpk=${1:?usage: sh tests/run-demo.sh MPK MPK-RUN LOGITS_CMP}
run=${2:?usage: sh tests/run-demo.sh MPK MPK-RUN LOGITS_CMP}
cmp=${3:?usage: sh tests/run-demo.sh MPK MPK-RUN LOGITS_CMP}
dir=${4:-examples/demo}
ref=${5:-tests/data/demo-ref}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
TOL=1e-2
ok() { pass=$((pass + 1)); }
no() { fail=$((fail + 1)); echo "FAIL demo: $*"; [ -s "$tmp/log" ] && sed 's/^/    /' "$tmp/log"; }

vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$dir/config.json" | head -1)
if "$mpk" import "$dir" -o "$tmp/demo.mpk" >"$tmp/log" 2>&1; then ok; else no "mpk import $dir"; fi
for w in 8 132; do
    if "$mpk" build --workers=$w "$tmp/demo.mpk" -o "$tmp/demo-w$w.mpkb" >"$tmp/log" 2>&1; then ok; else
        no "mpk build --workers=$w"; fi
done
for p in "$ref"/p*.txt; do
    b=${p%.txt}
    name=$(basename "$b")
    prompt=$(cat "$b.prompt.ids")
    want=$(cat "$b.generated.ids")
    n=$(echo "$want" | wc -w)
    np=$(echo "$prompt" | tr ',' ' ' | wc -w)
    : >"$tmp/log"
    got=$("$mpk" tokenize "$dir" "$p" 2>"$tmp/log" | tr ' ' ',')
    if [ "$got" = "$prompt" ]; then ok; else no "$name: mpk tokenize: got $got, want $prompt"; fi
    for w in 8 132; do
        blob=$tmp/demo-w$w.mpkb
        for seed in 0 1 2; do
            got=$("$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" --temperature 0 --order-seed $seed \
                  --dump-logits "$tmp/logits.f32" 2>"$tmp/log")
            if [ $? -ne 0 ] || [ "$got" != "$want" ]; then
                no "$name workers=$w seed=$seed: tokens"; echo "    got  $got"; echo "    want $want"; continue
            fi
            if ! rel=$("$cmp" "$tmp/logits.f32" $((np - 1)) "$b.last_logits.f32" 0 "$vocab" $TOL); then
                no "$name workers=$w seed=$seed: logits relative L2 error $rel > $TOL"; continue
            fi
            ok
        done
    done
    text=$(cat "$p")
    got=$("$run" "$tmp/demo-w132.mpkb" --weights "$dir" --cpu --temperature 0 --prompt "$text" --ids -n "$n" 2>"$tmp/log")
    if [ "$got" = "$want" ]; then ok; else no "$name: --prompt --ids: got $got, want $want"; fi
    "$run" "$tmp/demo-w132.mpkb" --weights "$dir" --cpu --temperature 0 --prompt "$text" -n "$n" >"$tmp/text" 2>"$tmp/log" &&
        echo "$want" >"$tmp/ids" && "$mpk" detokenize "$dir" "$tmp/ids" >"$tmp/want" 2>>"$tmp/log"
    # mpk-run ends the text at an EOS id, which detokenize writes out
    sed 's/<|endoftext|>$//; s/<|im_end|>$//' "$tmp/want" >"$tmp/want2"
    if cmp -s "$tmp/text" "$tmp/want2"; then ok; else
        no "$name: --prompt text differs from mpk detokenize's"; diff "$tmp/text" "$tmp/want2" | head -5; fi
    echo "demo: $name: $(printf '%s' "$text")$(cat "$tmp/text" | tr '\n' ' ' | cut -c1-100)"
done
# The chat template: mpk's ChatML rendering, tokenized, is HF's apply_chat_template.
for f in "$ref"/chat-*.ids; do
    [ -f "$f" ] || continue
    n=$(basename "$f" .ids); n=${n#chat-}
    : >"$tmp/log"
    got=$("$mpk" tokenize --chat "$dir" "tests/data/tok-chat/$n.json" 2>"$tmp/log")
    if [ "$got" = "$(cat "$f")" ]; then ok; else no "chat $n: got $got, want $(cat "$f")"; fi
done
echo "demo: $pass passed, $fail failed"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]
