#!/bin/sh
# run-text.sh - the tokenizer and chat formats against HF, on the fixtures
# that tools/make_tokenizer_fixtures.py recorded with HF tokenizers and
# transformers (tests/data/tok-*), and the text commands' refusals.
# Run from the repository root: sh tests/run-text.sh bin/mpk
# Prints each failing case and "text: N passed, M failed"; exits 1 on failure.
bin=${1:?usage: sh tests/run-text.sh BIN/mpk}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
no() { fail=$((fail + 1)); echo "FAIL $*"; }

# same WHAT FILE CMD...: CMD's standard output is FILE, byte for byte.
same() {
    what=$1 want=$2
    shift 2
    if "$@" >"$tmp/out" 2>"$tmp/err" && cmp -s "$tmp/out" "$want"; then ok; else
        no "$what: $*"; sed 's/^/    /' "$tmp/err"; cmp "$tmp/out" "$want" | sed 's/^/    /'; fi
}

# expect STATUS PATTERN CMD...: CMD exits STATUS, its stderr matches PATTERN.
expect() {
    want=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    got=$?
    if [ "$got" -eq "$want" ] && grep -q -e "$pat" "$tmp/err"; then ok; else
        no "$* (exit $got, wanted $want; pattern '$pat')"; sed 's/^/    /' "$tmp/err"; fi
}

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

echo "text: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
