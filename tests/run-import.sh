#!/bin/sh
# run-import.sh - tests of `mpk import`, Hugging Face config.json to .mpk.
#
#   sh tests/run-import.sh BIN/mpk [--update]      (from the repository root)
#
# Every tests/import/NAME.json is run as
#     BIN import tests/import/NAME.json
# and its golden file is chosen by the name:
#   NAME.json        a good config: the exit status must be 0, standard
#                    error empty, and standard output equal to
#                    tests/import/NAME.mpk byte for byte; that output must
#                    then pass BIN check -Werror.
#   bad-NAME.json    a bad one: tests/import/bad-NAME.err is a first line
#                    "# exit: N" (N the expected status, never 0) followed by
#                    the expected standard error, byte for byte; standard
#                    output must be empty.
# With --update the golden files are rewritten from the current output, for
# a human to review (git diff); a good config that fails or a bad one that
# succeeds is still a failure.
#
# Then, with goldens aside:
#   - the imports of the three real configs (qwen3-0.6b, qwen3-8b,
#     llama-3.2-1b) must compile to the same graph as examples/NAME.mpk
#     (BIN build --emit=graph): params compared as sorted sets, since the
#     order of declaration is free, and eos only where the example has one;
#     everything else (weights, state, inputs, every op) line for line;
#   - -o: the file written equals standard output; a failure leaves an
#     existing file as it was and no temporary file behind; a file replaced
#     keeps its mode, a symbolic link stays one; read and write errors exit
#     2; '-' is standard input (as CONFIG) and standard output (as OUT).
#
# Prints FAIL lines (a diff -u after a golden mismatch), then one line
# "import: N passed, M failed". Exit status 1 if any test failed, 2 on a
# usage error.

unset MPK_PATH
LC_ALL=C
export LC_ALL

. "$(dirname "$0")/lib.sh"
test_args run-import.sh import "$@"
test_need_exe run-import.sh

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
ko() { fail=$((fail + 1)); echo "FAIL $*"; }

# ---- golden files ----------------------------------------------------------

# good NAME: a config that must import and check.
good() {
    j=tests/import/$1.json want=tests/import/$1.mpk
    "$bin" import "$j" >"$tmp/out" 2>"$tmp/err"
    st=$?
    if [ $st -ne 0 ] || [ -s "$tmp/err" ]; then
        ko "$j: exit $st, wanted 0 and no messages"; sed 's/^/    /' "$tmp/err"; return
    fi
    cp "$tmp/out" "$tmp/$1.mpk"     # for the comparison with the examples
    if [ $update -eq 1 ]; then
        cmp -s "$tmp/out" "$want" || { cp "$tmp/out" "$want"; echo "updated $want"; }
    elif ! cmp -s "$want" "$tmp/out"; then
        ko "$j: output differs from $want"; diff -u "$want" "$tmp/out"; return
    fi
    if "$bin" check -Werror -I stdlib "$tmp/$1.mpk" >"$tmp/err" 2>&1; then ok
    else ko "$j: the output does not pass mpk check -Werror"; sed 's/^/    /' "$tmp/err"; fi
}

# bad NAME: a config that must be refused with the golden message.
bad() {
    j=tests/import/$1.json want=tests/import/$1.err
    "$bin" import "$j" >"$tmp/out" 2>"$tmp/err"
    st=$?
    { echo "# exit: $st"; cat "$tmp/err"; } >"$tmp/got"
    if [ $st -eq 0 ] || [ -s "$tmp/out" ]; then
        ko "$j: exit $st, wanted a failure and nothing on standard output"; return
    fi
    if [ $update -eq 1 ]; then
        cmp -s "$tmp/got" "$want" || { cp "$tmp/got" "$want"; echo "updated $want"; }
        ok
    elif cmp -s "$want" "$tmp/got"; then ok
    else ko "$j: exit status or messages differ from $want"; diff -u "$want" "$tmp/got"; fi
}

for j in tests/import/*.json; do
    n=$(basename "$j" .json)
    case $n in
    bad-*) bad "$n" ;;
    *) good "$n" ;;
    esac
done

# ---- the real configs against the hand-written examples -------------------

for n in qwen3-0.6b qwen3-8b llama-3.2-1b; do
    if [ ! -f "$tmp/$n.mpk" ]; then ko "examples/$n.mpk: no import to compare"; continue; fi
    "$bin" build --emit=graph -I stdlib "examples/$n.mpk" >"$tmp/ex.graph" 2>&1 &&
    "$bin" build --emit=graph -I stdlib "$tmp/$n.mpk" >"$tmp/im.graph" 2>&1 || {
        ko "examples/$n.mpk: build --emit=graph failed"; cat "$tmp/ex.graph" "$tmp/im.graph"; continue; }
    grep -q '^param eos ' "$tmp/ex.graph" || sed -i '/^param eos /d' "$tmp/im.graph"
    for g in ex im; do
        grep '^param ' "$tmp/$g.graph" | sort >"$tmp/$g.params"
        grep -v '^param ' "$tmp/$g.graph" >"$tmp/$g.rest"
    done
    if ! cmp -s "$tmp/ex.params" "$tmp/im.params"; then
        ko "examples/$n.mpk: the imported model's params differ"
        diff -u "$tmp/ex.params" "$tmp/im.params"
    elif ! cmp -s "$tmp/ex.rest" "$tmp/im.rest"; then
        ko "examples/$n.mpk: the imported model's graph differs"
        diff -u "$tmp/ex.rest" "$tmp/im.rest" | head -40
    else ok; fi
done

# ---- -o, standard input and output, I/O errors -----------------------------

# expect STATUS PATTERN CMD...: CMD exits STATUS and its output (stdout and
# stderr together) matches the grep pattern PATTERN ('' for any).
expect() {
    want=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>&1 </dev/null
    got=$?
    if [ "$got" -eq "$want" ] && { [ -z "$pat" ] || grep -q -e "$pat" "$tmp/out"; }; then ok
    else ko "$* (exit $got, wanted $want; pattern '$pat')"; sed 's/^/    /' "$tmp/out"; fi
}

# check WHAT COMMAND...: a shell condition.
check() {
    what=$1
    shift
    if "$@"; then ok; else ko "$what"; fi
}

mkdir "$tmp/o"
q=tests/import/qwen3-8b
expect 0 '' "$bin" import $q.json -o "$tmp/o/q.mpk"
check "-o writes what standard output gets" cmp -s $q.mpk "$tmp/o/q.mpk"
check "-o leaves no temporary file" test "$(ls -A "$tmp/o")" = q.mpk
expect 0 '' "$bin" import $q.json -o -
check "-o - is standard output" cmp -s $q.mpk "$tmp/out"

printf 'old\n' >"$tmp/o/keep.mpk"
chmod 640 "$tmp/o/keep.mpk"
expect 1 'not supported' "$bin" import tests/import/bad-arch-mistral.json -o "$tmp/o/keep.mpk"
check "a bad config leaves -o FILE as it was" test "$(cat "$tmp/o/keep.mpk")" = old
expect 1 'invalid JSON' "$bin" import tests/import/bad-syntax.json -o "$tmp/o/new.mpk"
check "a bad config creates no -o FILE" test ! -e "$tmp/o/new.mpk"
expect 0 '' "$bin" import $q.json -o "$tmp/o/keep.mpk"
check "-o replaces the file" cmp -s $q.mpk "$tmp/o/keep.mpk"
check "-o keeps the mode of the file replaced" test "$(stat -c %a "$tmp/o/keep.mpk")" = 640
ln -s keep.mpk "$tmp/o/link.mpk"
expect 0 '' "$bin" import tests/import/qwen3-0.6b.json -o "$tmp/o/link.mpk"
check "-o through a symbolic link replaces its target" \
    sh -c 'test -L "$1/link.mpk" && cmp -s "$2" "$1/keep.mpk"' sh "$tmp/o" tests/import/qwen3-0.6b.mpk
check "no temporary files are left behind" \
    test "$(ls -A "$tmp/o" | tr '\n' ' ')" = "keep.mpk link.mpk q.mpk "

cp $q.json "$tmp/o/c.json"
expect 2 "cannot write '.*c.json': it is an input" "$bin" import "$tmp/o/c.json" -o "$tmp/o/c.json"
check "an -o that is the config leaves it as it was" cmp -s $q.json "$tmp/o/c.json"
rm -f "$tmp/o/c.json"
expect 2 'cannot write'                "$bin" import $q.json -o "$tmp/no/such/dir/x.mpk"
expect 2 "cannot write '.*': Is a directory" "$bin" import $q.json -o "$tmp/o"
expect 2 'nope.json: cannot read'      "$bin" import "$tmp/nope.json"
expect 2 'tests/import/config.json: cannot read: No such file' "$bin" import tests/import
if [ -w /dev/full ]; then
    expect 2 'cannot write'            "$bin" import $q.json -o /dev/full
fi

# rope_parameters wins over rope_scaling (as in transformers): a scaling
# given beside it is ignored, with a warning rather than silently
sed -e '/"rope_scaling"/d' -e '$ s/^}$/, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000}, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}/' \
    tests/import/qwen3-0.6b.json >"$tmp/yarn.json"
expect 0 'warning: "rope_scaling" ("yarn") is ignored: "rope_parameters" is given, and wins' \
    "$bin" import "$tmp/yarn.json" -o "$tmp/yarn.mpk"
check "a warning still writes the model" grep -q '^param theta = 1000000.0$' "$tmp/yarn.mpk"

# standard input: the same model, but for where it came from.
"$bin" import - <$q.json >"$tmp/out" 2>&1
st=$?
sed 's|^# Generated by `mpk import` from standard input\.$|# Generated by `mpk import` from '$q'.json.|' \
    "$tmp/out" >"$tmp/stdin.mpk"
check "import - reads standard input (exit $st)" cmp -s $q.mpk "$tmp/stdin.mpk"
"$bin" import - <tests/import/bad-syntax.json >"$tmp/out" 2>&1
check "messages about standard input name <stdin>" grep -q '^<stdin>:4:21: invalid JSON' "$tmp/out"

echo "import: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
