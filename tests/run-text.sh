#!/bin/sh
# run-text.sh - the tokenizer and chat formats against HF, on the fixtures
# that tools/make_tokenizer_fixtures.py recorded with HF tokenizers and
# transformers (tests/data/tok-*), and the text commands' refusals.
# With mpk-run, text prompts and chats on the tiny models (--cpu).
# Run from the repository root: sh tests/run-text.sh bin/mpk [bin/mpk-run]
# Prints each failing case and "text: N passed, M failed"; exits 1 on failure.
bin=${1:?usage: sh tests/run-text.sh BIN/mpk [BIN/mpk-run]}
run=$2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh" # ok, no, same, expect

for kind in llama3 qwen2; do
    d=tests/data/tok-$kind
    for f in tests/data/tok-cases/*.txt; do
        n=$(basename "$f" .txt)
        same "$kind $n: ids" "$d/expect/$n.ids" "$bin" tokenize "$d" "$f"
        same "$kind $n: ids --raw" "$d/expect/$n.raw.ids" "$bin" tokenize --raw "$d/tokenizer.json" "$f"
        same "$kind $n: decode" "$d/expect/$n.dec" "$bin" detokenize "$d" "$d/expect/$n.ids"
        # decode(encode(x)) is x; with Qwen2's NFC normalizer it is NFC(x),
        # which is HF's decode of its ids (there is no BOS to differ).
        want=$f
        [ "$kind" = qwen2 ] && want=$d/expect/$n.dec
        "$bin" tokenize --raw "$d" "$f" >"$tmp/ids" && same "$kind $n: round trip" "$want" "$bin" detokenize "$d" "$tmp/ids"
    done
    # Bytes that are not UTF-8 (HF cannot take them): they come back as they were.
    for f in tests/data/tok-cases/*.bin; do
        "$bin" tokenize --raw "$d" "$f" >"$tmp/ids" && same "$kind $(basename "$f"): byte round trip" "$f" \
            "$bin" detokenize "$d" "$tmp/ids"
    done
    for f in tests/data/tok-chat/*.json; do
        n=$(basename "$f" .json)
        same "$kind $n: chat text" "$d/expect/$n.chat.txt" "$bin" tokenize --chat --render "$d" "$f"
        same "$kind $n: chat ids" "$d/expect/$n.chat.ids" "$bin" tokenize --chat "$d" "$f"
    done
    # Standard input, and ids separated by commas.
    same "$kind stdin" "$d/expect/english.ids" sh -c "\"$bin\" tokenize $d < tests/data/tok-cases/english.txt"
    tr ' ' ',' <"$d/expect/english.ids" >"$tmp/commas"
    same "$kind commas" "$d/expect/english.dec" "$bin" detokenize "$d" "$tmp/commas"
done
# The other family's format forced on a template.
same "forced llama3" tests/data/tok-llama3/expect/system.chat.txt \
    "$bin" tokenize --chat --render --chat-format llama3 tests/data/tok-llama3 tests/data/tok-chat/system.json
printf '1 2 x\n' >"$tmp/bad.ids"
expect 1 "byte 4: 'x' is not a token id" "$bin" detokenize tests/data/tok-qwen2 "$tmp/bad.ids"
echo 99999 >"$tmp/big.ids"
expect 1 'id 99999 is not a token of' "$bin" detokenize tests/data/tok-qwen2 "$tmp/big.ids"
expect 2 'no tokenizer given'           "$bin" tokenize
expect 2 'go with --chat'               "$bin" tokenize --render tests/data/tok-qwen2
expect 2 "unknown option '--frob'"      "$bin" tokenize --frob tests/data/tok-qwen2
expect 1 'tokenizer.json: cannot read'  "$bin" tokenize tests/data/qwen3-tp tests/data/tok-cases/english.txt
expect 1 "unknown chat format 'x'"      "$bin" tokenize --chat --chat-format x tests/data/tok-qwen2 tests/data/tok-chat/system.json

# Hostile files: one line naming the file and the problem, exit 1.
h=tests/data/tok-hostile
for f in "$h"/*.tokenizer.json; do
    pat=$(sed -n 's/^# *//p' "${f%.tokenizer.json}.expect")
    expect 1 "$pat" "$bin" tokenize "$f" tests/data/tok-cases/english.txt
done
for f in "$h"/*.tokenizer_config.json; do
    cp "$f" "$tmp/tokenizer_config.json" && cp tests/data/tok-qwen2/tokenizer.json "$tmp/"
    pat=$(sed -n 's/^# *//p' "${f%.tokenizer_config.json}.expect")
    expect 1 "$pat" "$bin" tokenize --chat "$tmp" tests/data/tok-chat/system.json
done

# mpk import DIR: config.json, generation_config.json, weights' dtypes,
# tokenizer files.
"$bin" import tests/data/qwen3-tiny/config.json >"$tmp/want.mpk"
same "import DIR" "$tmp/want.mpk" "$bin" import tests/data/qwen3-tiny
mkdir -p "$tmp/ck" && cp tests/data/qwen3-tiny/* "$tmp/ck/"
printf '{"eos_token_id": [7, 5, 9], "temperature": 0.6}\n' >"$tmp/ck/generation_config.json"
"$bin" import "$tmp/ck" >"$tmp/ck.mpk" 2>"$tmp/err" && grep -q '^param eos = \[5, 7, 9\]$' "$tmp/ck.mpk" &&
    "$bin" check -Werror "$tmp/ck.mpk" && ok || no "import DIR: EOS ids of both configs"
printf '{"eos_token_id": 640}\n' >"$tmp/ck/generation_config.json"
expect 1 'generation_config.json: "eos_token_id" 640 is not a token id' "$bin" import "$tmp/ck"
printf '{"eos_token_id": "x"}\n' >"$tmp/ck/generation_config.json"
expect 1 'generation_config.json: "eos_token_id" must be a token id' "$bin" import "$tmp/ck"
printf '{"temperature": -1' >"$tmp/ck/generation_config.json"
expect 1 'generation_config.json:1:.*invalid JSON' "$bin" import "$tmp/ck"
rm "$tmp/ck/generation_config.json"
# An f32 checkpoint: refused at import, naming the tensor.
hdr='{"model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
{ printf "\\$(printf %03o ${#hdr})\\000\\000\\000\\000\\000\\000\\000"; printf '%s' "$hdr"; printf 'abcd'; } \
    >"$tmp/ck/model.safetensors"
expect 1 "model.safetensors: tensor 'model.norm.weight' is F32: mpk runs bf16 checkpoints; convert" "$bin" import "$tmp/ck"
printf 'junk' >"$tmp/ck/model.safetensors"
expect 1 'model.safetensors: not a safetensors file' "$bin" import "$tmp/ck"
rm "$tmp/ck/model.safetensors"
expect 2 'neither model.safetensors nor' "$bin" import "$tmp/ck"
cp tests/data/qwen3-tiny/model.safetensors "$tmp/ck/" && cp tests/data/tok-hostile/unigram.tokenizer.json "$tmp/ck/tokenizer.json"
expect 0 'warning: the tokenizer above is not usable' "$bin" import "$tmp/ck"
rm "$tmp/ck/config.json"
expect 2 'ck/config.json: cannot read' "$bin" import "$tmp/ck"

# mpk-run: text in, text out, on the tiny models (random weights: the text
# is noise, but it must be the noise the ids say).
if [ -n "$run" ]; then
    for m in qwen3-tiny llama-tiny; do
        d=tests/data/$m
        "$bin" import "$d/config.json" -o "$tmp/$m.mpk" && "$bin" build "$tmp/$m.mpk" -o "$tmp/$m.mpkb" || no "build $m"
        r="$run $tmp/$m.mpkb --weights $d --cpu -n 12"
        printf 'The quick brown fox' >"$tmp/prompt.txt"
        "$bin" tokenize "$d" "$tmp/prompt.txt" | tr ' ' ',' >"$tmp/prompt.ids"
        $r --prompt-ids "$(cat "$tmp/prompt.ids")" >"$tmp/want.ids" 2>"$tmp/err" || no "$m: --prompt-ids"
        same "$m: --prompt --ids" "$tmp/want.ids" $r --prompt 'The quick brown fox' --ids
        same "$m: -f --ids" "$tmp/want.ids" $r -f "$tmp/prompt.txt" --ids
        "$bin" detokenize "$d" "$tmp/want.ids" >"$tmp/want.txt"
        same "$m: --prompt text" "$tmp/want.txt" $r --prompt 'The quick brown fox'
        same "$m: -f - text" "$tmp/want.txt" sh -c "$r -f - < $tmp/prompt.txt"
        # --stop: the text before the first occurrence of a piece of it.
        stop=$(head -c 9 "$tmp/want.txt" | tail -c 3)
        LC_ALL=C awk -v s="$stop" 'BEGIN { RS = "^$" } { printf "%s", substr($0, 1, index($0, s) - 1) }' \
            "$tmp/want.txt" >"$tmp/stop.txt"
        same "$m: --stop" "$tmp/stop.txt" $r --prompt 'The quick brown fox' --stop "$stop"
        # generation_config.json's EOS ids stop it too (with config.json's).
        mkdir -p "$tmp/$m-gc" && cp "$d"/* "$tmp/$m-gc/"
        third=$(cut -d' ' -f3 "$tmp/want.ids")
        printf '{"eos_token_id": [%s], "temperature": 0.7, "top_k": 20}\n' "$third" >"$tmp/$m-gc/generation_config.json"
        cut -d' ' -f1-3 "$tmp/want.ids" >"$tmp/eos.ids"
        same "$m: generation_config EOS" "$tmp/eos.ids" \
            $run "$tmp/$m.mpkb" --weights "$tmp/$m-gc" --cpu -n 12 --prompt-ids "$(cat "$tmp/prompt.ids")"
        printf '{"top_p": 7}' >"$tmp/$m-gc/generation_config.json"
        expect 1 'generation_config.json: "top_p" must be a number from 0 to 1' \
            $run "$tmp/$m.mpkb" --weights "$tmp/$m-gc" --cpu --prompt-ids 1
        # One chat turn is the rendered conversation, generated.
        printf '[{"role": "user", "content": "Hello there"}]' >"$tmp/conv.json"
        "$bin" tokenize --chat "$d" "$tmp/conv.json" | tr ' ' ',' >"$tmp/chat.ids"
        $r --prompt-ids "$(cat "$tmp/chat.ids")" >"$tmp/chat-out.ids"
        { "$bin" detokenize --skip-special "$d" "$tmp/chat-out.ids"; echo; } >"$tmp/chat-want.txt"
        same "$m: --chat" "$tmp/chat-want.txt" sh -c "echo 'Hello there' | $r --chat"
    done
    # mpk run DIR: import, build into the cache, run; the second time from the cache.
    d=tests/data/qwen3-tiny
    $run "$tmp/qwen3-tiny.mpkb" --weights $d --cpu -n 12 --prompt 'The quick brown fox' >"$tmp/want.txt"
    export XDG_CACHE_HOME="$tmp/cache"
    same "mpk run" "$tmp/want.txt" "$bin" run $d --cpu -n 12 --prompt 'The quick brown fox'
    blob=$(ls "$tmp/cache/mpk/"*.mpkb)
    [ "$(echo "$blob" | wc -l)" -eq 1 ] && ok || no "mpk run: one blob in the cache, not: $blob"
    touch -d '2000-01-01' "$blob"
    same "mpk run, cached" "$tmp/want.txt" "$bin" run $d --cpu -n 12 --prompt 'The quick brown fox'
    [ "$(find "$blob" -newermt 2001-01-01 | wc -l)" -eq 0 ] && ok || no "mpk run rebuilt a cached blob"
    "$bin" run -D max_seq=64 $d --cpu -n 2 --prompt-ids 1 >/dev/null 2>&1 &&
        [ "$(ls "$tmp/cache/mpk/"*.mpkb | wc -l)" -eq 2 ] && ok || no "mpk run -D: a blob of its own"
    expect 2 'is not a checkpoint directory' "$bin" run "$tmp/nope"
    expect 2 "mpk-run's options go after DIR" "$bin" run --cpu $d
    expect 2 'no checkpoint directory given'  "$bin" run
    expect 2 'config.json: cannot read' "$bin" run tests/data/tok-qwen2 --prompt x
    expect 1 "the model has no param 'nope'" "$bin" run -D nope=1 $d --cpu --prompt x
    unset XDG_CACHE_HOME
    q="$tmp/qwen3-tiny.mpkb"
    expect 2 'one prompt at a time'   $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt a --prompt-ids 1
    expect 2 'a prompt is required'   $run "$q" --weights tests/data/qwen3-tiny --cpu
    expect 2 '--ids goes with a text' $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt-ids 1 --ids
    expect 2 '--chat-format goes with' $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt a --chat-format chatml
    expect 2 '--stop works on text'   $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt-ids 1 --stop x
    expect 2 'is a model source, not a blob' $run "$tmp/qwen3-tiny.mpk" --weights tests/data/qwen3-tiny --prompt-ids 1
    expect 1 'needs the checkpoint.s tokenizer' $run "$q" --weights tests/data/qwen3-tp --cpu --prompt a
    expect 1 'the prompt is empty'    $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt ''
    expect 1 'does not belong to this model' $run "$q" --weights tests/data/qwen3-tiny --cpu --prompt '<|im_end|>' \
        --tokenizer tests/data/tok-qwen2
    expect 1 "unknown chat format 'x'" sh -c "echo hi | $run $q --weights tests/data/qwen3-tiny --cpu --chat --chat-format x"
fi

echo "text: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
