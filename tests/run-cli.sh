#!/bin/sh
# run-cli.sh - the mpk command line: exit statuses, options, standard input,
# output files. Run from the repository root: sh tests/run-cli.sh bin/mpk
# Prints each failing case and "cli: N passed, M failed"; exits 1 on failure.
unset MPK_PATH
bin=${1:?usage: sh tests/run-cli.sh BIN/mpk}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

# expect STATUS PATTERN CMD...: CMD exits STATUS and its output (stdout and
# stderr together) matches the grep pattern PATTERN ('' for any).
expect() {
    want=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>&1 </dev/null
    got=$?
    if [ "$got" -eq "$want" ] && { [ -z "$pat" ] || grep -q -e "$pat" "$tmp/out"; }; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $* (exit $got, wanted $want; pattern '$pat')"; sed 's/^/    /' "$tmp/out"
    fi
}

expect 2 'usage: mpk check'            "$bin"
expect 0 'usage: mpk check'            "$bin" --help
expect 0 'usage: mpk check'            "$bin" check --help
expect 0 '^mpk [0-9]'                  "$bin" --version
expect 2 "unknown command 'frob'"      "$bin" frob x.mpk
expect 2 "unknown option '--bogus'"    "$bin" check --bogus examples/qwen3-8b.mpk
expect 2 "option '-D' needs an argument" "$bin" check -D
expect 2 'no input file'               "$bin" check
expect 2 'needs a number'              "$bin" check --max-errors=x examples/qwen3-8b.mpk
expect 2 "cannot read 'nope.mpk'"      "$bin" check nope.mpk
expect 2 'is a directory'              "$bin" check examples
expect 0 ''                            "$bin" build examples/qwen3-0.6b.mpk -o "$tmp/q.mpkb"
expect 0 'tasks=\|^blob'                "$bin" dump "$tmp/q.mpkb"
expect 0 '^digraph'                    "$bin" dump --dot "$tmp/q.mpkb"
expect 0 'bytes per token'             "$bin" build --stats --workers=8 examples/qwen3-0.6b.mpk -o "$tmp/q8.mpkb"
expect 0 '^# after fuse'               "$bin" build --dump=fuse -D layers=1 examples/qwen3-0.6b.mpk -o "$tmp/q1.mpkb"
expect 2 "unknown pass 'frob'"         "$bin" build --dump=frob examples/qwen3-0.6b.mpk
expect 2 '--workers needs a number'    "$bin" build --workers=0 examples/qwen3-0.6b.mpk
expect 2 'go with .mpk build'          "$bin" check --stats examples/qwen3-0.6b.mpk
# tensor parallelism: --tp's values, where it goes, and what cannot be split
expect 2 '--tp needs a number of GPUs'  "$bin" build --tp=0 examples/qwen3-0.6b.mpk
expect 2 '--tp needs a number of GPUs'  "$bin" build --tp=65 examples/qwen3-0.6b.mpk
expect 2 '--tp needs a number of GPUs'  "$bin" build --tp=two examples/qwen3-0.6b.mpk
expect 2 'go with .mpk build'           "$bin" check --tp=2 examples/qwen3-0.6b.mpk
expect 0 'ranks  *4 (tensor parallel'   "$bin" build --stats --tp=4 examples/qwen3-8b.mpk -o "$tmp/q8tp4.mpkb"
expect 0 ' tp 4$'                       "$bin" dump "$tmp/q8tp4.mpkb"
expect 1 'error: --tp 3: cannot shard'  "$bin" build --tp=3 examples/qwen3-0.6b.mpk -o "$tmp/x.mpkb"
[ ! -e "$tmp/x.mpkb" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL a refused --tp build left a blob"; }
expect 2 '--dot goes with'             "$bin" build --dot examples/qwen3-0.6b.mpk
expect 1 'not an mpk blob'             "$bin" dump examples/qwen3-0.6b.mpk
expect 1 'cannot open'                 "$bin" dump "$tmp/nope.mpkb"
expect 2 'takes no model options'      "$bin" dump -D x=1 "$tmp/q.mpkb"
expect 2 ''                            "$bin" import "$tmp/nope.json"
# mpk build with no -o writes NAME.mpkb in the current directory
(cd "$tmp" && "$OLDPWD/$bin" build "$OLDPWD/examples/qwen3-0.6b.mpk" >/dev/null 2>&1) && [ -s "$tmp/qwen3-0.6b.mpkb" ] &&
    pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL default blob name"; }
run=$(dirname "$bin")/mpk-run
if [ -x "$run" ]; then
    expect 0 'usage: mpk-run'              "$run" --help
    expect 2 'no blob given'               "$run" --cpu
    expect 2 '--weights PATH is required'  "$run" "$tmp/q.mpkb" --cpu --prompt-ids 1
    expect 2 'needs comma-separated'       "$run" "$tmp/q.mpkb" --cpu --weights x --prompt-ids 1,,2
    expect 2 'is for the GPU executor'     "$run" "$tmp/q.mpkb" --cpu --weights x --prompt-ids 1 --trace t.json
    expect 2 'static or dynamic'           "$run" "$tmp/q.mpkb" --weights x --prompt-ids 1 --schedule fast
    expect 2 'needs milliseconds'          "$run" "$tmp/q.mpkb" --weights x --prompt-ids 1 --watchdog 0
    # without a GPU (CI), the GPU executor (the default) says how to go on
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
        d=tests/data/qwen3-tiny
        "$bin" import "$d/config.json" -o "$tmp/tiny.mpk" >/dev/null 2>&1 && "$bin" build "$tmp/tiny.mpk" -o "$tmp/tiny.mpkb" >/dev/null 2>&1
        expect 1 'run with --cpu'          "$run" "$tmp/tiny.mpkb" --weights "$d" --prompt-ids 1,2
    fi
    expect 2 '-n needs a positive'         "$run" "$tmp/q.mpkb" --cpu --weights x --prompt-ids 1 -n 0
    expect 1 'outside the model.s vocabulary' "$run" "$tmp/q.mpkb" --cpu --weights x --prompt-ids 999999
    expect 1 'cannot open'                 "$run" "$tmp/nope.mpkb" --cpu --weights x --prompt-ids 1
    expect 1 "model.embed_tokens.weight"   "$run" "$tmp/q.mpkb" --cpu --weights tests/data/qwen3-tiny --prompt-ids 1
    expect 1 'KV cache holds'              "$run" "$tmp/q.mpkb" --cpu --weights x --prompt-ids 1 -n 5000
    "$bin" build --tp=2 examples/qwen3-0.6b.mpk -o "$tmp/qtp2.mpkb" >/dev/null 2>&1
    expect 1 'built for 2 GPUs.*run with --cpu' "$run" "$tmp/qtp2.mpkb" --weights x --prompt-ids 1
    expect 1 'lm_head.weight\|embed_tokens' "$run" "$tmp/qtp2.mpkb" --cpu --weights tests/data/qwen3-tp --prompt-ids 1
fi
expect 2 "unknown --emit kind 'blob'"  "$bin" build --emit=blob examples/qwen3-8b.mpk
expect 2 '-o goes with'                "$bin" check -o x examples/qwen3-8b.mpk
expect 2 'one input file'              "$bin" build --emit=graph examples/qwen3-8b.mpk examples/qwen3-0.6b.mpk
expect 0 ''                            "$bin" check examples/qwen3-8b.mpk examples/qwen3-0.6b.mpk examples/llama-3.2-1b.mpk
# several files: each is compiled; the worst status wins
expect 1 'syntax error'                "$bin" check examples/qwen3-8b.mpk tests/diag/many-syntax-errors.mpk
expect 2 "cannot read 'nope.mpk'"      "$bin" check tests/diag/many-syntax-errors.mpk nope.mpk
# options after the file, attached forms
expect 0 'total'                       "$bin" check examples/qwen3-8b.mpk --time -Dlayers=2 -Istdlib
expect 0 '^param layers = 3$'          "$bin" build --emit graph -D layers=3 examples/qwen3-8b.mpk
expect 1 "no param 'nosuch'"           "$bin" check -D nosuch=1 examples/qwen3-8b.mpk
# output files
expect 0 ''                            "$bin" build --emit=graph -o "$tmp/g.txt" examples/qwen3-8b.mpk
if grep -q '^# graph decode: 832 ops' "$tmp/g.txt"; then pass=$((pass + 1))
else fail=$((fail + 1)); echo "FAIL -o did not write the graph"; fi
expect 2 'cannot write'                "$bin" build --emit=graph -o "$tmp/no/such/dir" examples/qwen3-8b.mpk
if [ -w /dev/full ]; then
    expect 2 'writing .* failed'       "$bin" build --emit=graph -o /dev/full examples/qwen3-8b.mpk
fi
# standard input, also from a pipe
printf 'input t : i32[1]\nweight e : f32[4, 2] = "e"\ngraph g { output o = embed(e, t) }\n' >"$tmp/m.mpk"
if "$bin" check - <"$tmp/m.mpk" && cat "$tmp/m.mpk" | "$bin" check -; then
    pass=$((pass + 1))
else fail=$((fail + 1)); echo "FAIL check -"; fi
# warnings: -w silences them, -Werror makes them errors
printf 'param unused = 1\ninput t : i32[1]\nweight e : f32[4, 2] = "e"\ngraph g { output o = embed(e, t) }\n' >"$tmp/w.mpk"
expect 0 "warning: param 'unused'"     "$bin" check "$tmp/w.mpk"
expect 1 'error: .*\[-Werror\]'        "$bin" check -Werror "$tmp/w.mpk"
"$bin" check -w "$tmp/w.mpk" >"$tmp/out" 2>&1
if [ $? -eq 0 ] && [ ! -s "$tmp/out" ]; then pass=$((pass + 1))
else fail=$((fail + 1)); echo "FAIL -w"; cat "$tmp/out"; fi
# the error cap
expect 1 'too many errors, stopping now \[--max-errors=2\]' "$bin" check --max-errors=2 tests/diag/many-syntax-errors.mpk
# imports through MPK_PATH
mkdir -p "$tmp/lib/std" && printf 'block ident(x) { return x }\n' >"$tmp/lib/std/mine.mpk"
printf 'import "std/mine.mpk"\ninput t : i32[1]\nweight e : f32[4, 2] = "e"\ngraph g { output o = ident(embed(e, t)) }\n' >"$tmp/i.mpk"
expect 1 "cannot find 'std/mine.mpk'"  "$bin" check "$tmp/i.mpk"
expect 0 ''                            env MPK_PATH="/nonexistent:$tmp/lib" "$bin" check "$tmp/i.mpk"
expect 0 ''                            "$bin" check -I "$tmp/lib" "$tmp/i.mpk"

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
