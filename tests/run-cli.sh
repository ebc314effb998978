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
# split-K: its values, where it goes, and that it splits a chunk graph's matvecs
expect 2 '--split-k needs .auto. or a number of parts from 1 to 64' "$bin" build --split-k=0 examples/qwen3-0.6b.mpk
expect 2 '--split-k needs .auto. or a number of parts from 1 to 64' "$bin" build --split-k=65 examples/qwen3-0.6b.mpk
expect 2 '--split-k needs .auto. or a number of parts from 1 to 64' "$bin" build --split-k=-1 examples/qwen3-0.6b.mpk
expect 2 "--split-k needs .auto. or a number of parts from 1 to 64, not 'Auto'" "$bin" build --split-k=Auto examples/qwen3-0.6b.mpk
expect 2 '--split-k needs .auto. or a number of parts from 1 to 64' "$bin" build --split-k= examples/qwen3-0.6b.mpk
expect 2 'go with .mpk build'           "$bin" check --split-k=2 examples/qwen3-0.6b.mpk
expect 0 ''                             "$bin" build --chunk=16 --split-k=4 -D layers=2 examples/qwen3-0.6b.mpk -o "$tmp/qs4.mpkb"
expect 0 'matvec_part.*parts=4'         "$bin" dump "$tmp/qs4.mpkb"
expect 0 'part_sum'                     "$bin" dump "$tmp/qs4.mpkb"
expect 0 ''                             "$bin" build --chunk=16 -D layers=2 examples/qwen3-0.6b.mpk -o "$tmp/qs1.mpkb"
"$bin" dump "$tmp/qs1.mpkb" | grep -q 'matvec_part\|part_sum' &&
    { fail=$((fail + 1)); echo "FAIL a build without --split-k has matvec_part or part_sum tasks"; } || pass=$((pass + 1))
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
    expect 2 'static, dynamic or auto'         "$run" "$tmp/q.mpkb" --weights x --prompt-ids 1 --schedule fast
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
# -D: numbers out of range say so, and lists are written as in the language
expect 1 '\-D eps=1e-400: the number is out of range for a float' "$bin" check -D eps=1e-400 examples/qwen3-8b.mpk
expect 1 '\-D hidden=99999999999999999999: the integer is out of range' "$bin" check -D hidden=99999999999999999999 examples/qwen3-8b.mpk
expect 1 "param 'hidden' is an int, not a list" "$bin" check -D 'hidden=[1]' examples/qwen3-8b.mpk
expect 1 'a list given with -D holds numbers' "$bin" check -D 'eos=[1,,2]' examples/qwen3-8b.mpk
expect 0 ' eos 7 8 9$'               sh -c '"$1" build -D "eos=[7, 8,9]" examples/qwen3-0.6b.mpk -o "$2" && "$1" dump "$2" | grep " eos "' sh "$bin" "$tmp/eos.mpkb"
# what f32 cannot hold is refused: eps 1e39 is inf there, theta 1e-300 makes
# the rope frequencies inf (every logit would be 0 or NaN)
expect 1 "rmsnorm: 'eps' must be a positive number that f32 can hold" "$bin" check -D eps=1e39 examples/qwen3-8b.mpk
expect 1 "rope: 'theta' must be a positive number that f32 can hold" "$bin" check -D theta=1e-300 examples/qwen3-8b.mpk
expect 1 "theta = 1e-40 gives rotary frequencies that f32 cannot hold" "$bin" check -D theta=1e-40 -D head_dim=256 examples/qwen3-8b.mpk
# one set of limits (mpk-blob(5)), checked where the input is, with numbers:
# a blob the compiler writes is one its reader takes
expect 1 'a dimension is at most 2147483647 (2^31 - 1), but this is 2147483648' \
                                       "$bin" build -D hidden=2147483648 tests/blob/fewer-tasks-than-workers.mpk -o "$tmp/x.mpkb"
expect 1 'tensor is too large: \[1000, 2147483647\] is 2147483647000 elements, and a tensor has at most 2^40' \
                                       "$bin" build -D hidden=2147483647 tests/blob/fewer-tasks-than-workers.mpk -o "$tmp/x.mpkb"
expect 1 "param 'eos': 151936 is not a token id: the vocabulary (the logits' columns) is 151936" \
                                       "$bin" build -D eos=151936 examples/qwen3-0.6b.mpk -o "$tmp/x.mpkb"
expect 1 'the model needs more than 2097152 tasks, the limit of a blob: model.layers.3' \
                                       "$bin" build -D layers=4096 examples/qwen3-8b.mpk -o "$tmp/x.mpkb"
printf 'param vocab = 2147483647\ninput t : i32[1]\nweight e : bf16[vocab, 64] = "e"\ngraph g {\n  logits = matmul(embed(e, t), e) with tile = 64\n  output next = argmax(logits)\n}\n' >"$tmp/v.mpk"
expect 1 'needs more than 2097152 tasks, the limit of a blob: e makes 33554433 after 2 others' \
                                       "$bin" build "$tmp/v.mpk" -o "$tmp/x.mpkb"
[ ! -e "$tmp/x.mpkb" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL a build over a limit left a blob"; }
# output files
expect 0 ''                            "$bin" build --emit=graph -o "$tmp/g.txt" examples/qwen3-8b.mpk
if grep -q '^# graph decode: 833 ops' "$tmp/g.txt"; then pass=$((pass + 1))
else fail=$((fail + 1)); echo "FAIL -o did not write the graph"; fi
expect 2 'cannot write'                "$bin" build --emit=graph -o "$tmp/no/such/dir" examples/qwen3-8b.mpk
if [ -w /dev/full ]; then
    expect 2 "cannot write '/dev/full': No space left" "$bin" build --emit=graph -o /dev/full examples/qwen3-8b.mpk
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

# Output files (mpk_out in util/): a symbolic link's target is written, a
# file replaced keeps its mode, devices and FIFOs are written in place, no
# temporary file is left, and an output that is an input is refused.
mkdir "$tmp/out.d"
o=$tmp/out.d
"$bin" build examples/qwen3-0.6b.mpk -o "$o/ref.mpkb" >/dev/null 2>&1
printf 'old\n' >"$o/f600" && chmod 600 "$o/f600" && ln -s f600 "$o/link"
expect 0 ''                            "$bin" build examples/qwen3-0.6b.mpk -o "$o/link"
check_out() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL output files: $*"; fi; }
check_out test -L "$o/link"
check_out cmp -s "$o/f600" "$o/ref.mpkb"
check_out test "$(stat -c %a "$o/f600")" = 600
ln -s new.mpkb "$o/dangling"
expect 0 ''                            "$bin" build examples/qwen3-0.6b.mpk -o "$o/dangling"
check_out test -L "$o/dangling"
check_out cmp -s "$o/new.mpkb" "$o/ref.mpkb"
printf 'old\n' >"$o/g.txt" && chmod 640 "$o/g.txt"
expect 0 ''                            "$bin" build --emit=graph examples/qwen3-0.6b.mpk -o "$o/g.txt"
check_out grep -q '^# graph decode' "$o/g.txt"
check_out test "$(stat -c %a "$o/g.txt")" = 640
expect 0 ''                            "$bin" dump "$o/ref.mpkb" -o "$o/g.txt"
check_out grep -q '^blob ' "$o/g.txt"
check_out test "$(stat -c %a "$o/g.txt")" = 640
# a name of 254 bytes is legal; the temporary name must fit beside it
long=$(printf '%0254d' 0)
expect 0 ''                            "$bin" build examples/qwen3-0.6b.mpk -o "$o/$long"
check_out cmp -s "$o/$long" "$o/ref.mpkb"
rm -f "$o/$long"
mkfifo "$o/fifo"
cat "$o/fifo" >"$o/from-fifo" &
expect 0 ''                            "$bin" build examples/qwen3-0.6b.mpk -o "$o/fifo"
wait
check_out test -p "$o/fifo"
check_out cmp -s "$o/from-fifo" "$o/ref.mpkb"
if [ "$(id -u)" -eq 0 ]; then
    mknod -m666 "$o/mynull" c 1 3
    expect 0 ''                        "$bin" build examples/qwen3-0.6b.mpk -o "$o/mynull"
    check_out test -c "$o/mynull"
    expect 0 ''                        "$bin" dump "$o/ref.mpkb" -o "$o/mynull"
    check_out test -c "$o/mynull"
else
    echo "cli: not root: skipping the device-node output tests (mknod)"
fi
check_out test "$(ls -A "$o" | tr '\n' ' ')" = "dangling f600 fifo from-fifo g.txt link $([ "$(id -u)" -eq 0 ] && echo 'mynull ')new.mpkb ref.mpkb "
cp examples/qwen3-0.6b.mpk "$o/m.mpk" && cp "$o/m.mpk" "$o/m.orig"
expect 2 "cannot write '.*m.mpk': it is"  "$bin" build "$o/m.mpk" -o "$o/m.mpk"
expect 2 "cannot write '.*m.mpk': it is"  "$bin" build --emit=graph "$o/m.mpk" -o "$o/m.mpk"
ln -s m.mpk "$o/m-link"
expect 2 "it is the input"             "$bin" build "$o/m.mpk" -o "$o/m-link"
check_out cmp -s "$o/m.mpk" "$o/m.orig"
cp "$o/ref.mpkb" "$o/d.mpkb"
expect 2 'it is an input'              "$bin" dump "$o/d.mpkb" -o "$o/d.mpkb"
check_out cmp -s "$o/d.mpkb" "$o/ref.mpkb"
if [ -w /dev/full ]; then
    expect 2 "cannot write '/dev/full': No space left" "$bin" dump "$o/ref.mpkb" -o /dev/full
fi
if [ -x "$run" ]; then
    d=tests/data/qwen3-tiny
    cp "$d/model.safetensors" "$o/ck.safetensors" && cp "$o/d.mpkb" "$o/d.orig"
    "$bin" import "$d/config.json" -o "$o/t.mpk" >/dev/null 2>&1 && "$bin" build "$o/t.mpk" -o "$o/t.mpkb" >/dev/null 2>&1
    cp "$o/t.mpkb" "$o/t.orig"
    expect 2 'it is an input'          "$run" "$o/t.mpkb" --cpu --weights "$o/ck.safetensors" --prompt-ids 1,2 -n 2 --dump-logits "$o/ck.safetensors"
    check_out cmp -s "$o/ck.safetensors" "$d/model.safetensors"
    expect 2 'it is an input'          "$run" "$o/t.mpkb" --cpu --weights "$o/ck.safetensors" --prompt-ids 1,2 -n 2 --dump-logits "$o/t.mpkb"
    check_out cmp -s "$o/t.mpkb" "$o/t.orig"
    ln -s ck.safetensors "$o/ck-link"
    expect 2 'it is the input'         "$run" "$o/t.mpkb" --cpu --weights "$o/ck.safetensors" --prompt-ids 1,2 -n 2 --dump-logits "$o/ck-link"
    expect 0 ''                        "$run" "$o/t.mpkb" --cpu --weights "$o/ck-link" --prompt-ids 1,2 -n 2 --dump-logits "$o/l.f32"
    expect 2 'it is the input'         "$run" "$o/t.mpkb" --cpu --weights "$o/ck-link" --prompt-ids 1,2 -n 2 --dump-logits "$o/ck.safetensors"
    check_out test "$(stat -c %s "$o/l.f32")" = $((3 * 640 * 4))   # prompt 2 + generated 2 - 1 rows
    # a FIFO as the blob is refused, not waited on
    expect 1 'not a regular file'      timeout 10 "$run" "$o/fifo" --cpu --weights "$d" --prompt-ids 1
    # A model of one 4 x 4 f32 weight, whose checkpoint is written here:
    # embed, LM head tied, argmax. It has no KV cache, so nothing bounds -n.
    printf 'input token : i32[1]\nweight e : f32[4, 4] = "e"\ngraph g {\n  x = embed(e, token)\n  logits = matmul(x, e)\n  output next = argmax(logits)\n}\n' >"$o/tiny.mpk"
    "$bin" build "$o/tiny.mpk" -o "$o/tiny.mpkb" >/dev/null 2>&1
    # tiny_st FILE ROW0 ROW1 ROW2 ROW3: each row 16 bytes as printf escapes
    tiny_st() {
        f=$1; shift
        hdr='{"e":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}}'
        { printf '\071\000\000\000\000\000\000\000%s' "$hdr"; for r; do printf "$r"; done; } >"$f"
    }
    z='\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000'
    one='\000\000\200\077\000\000\000\000\000\000\000\000\000\000\000\000'
    nan='\000\000\300\177\000\000\000\000\000\000\000\000\000\000\000\000'
    inf='\000\000\200\177\000\000\000\000\000\000\000\000\000\000\000\000'
    tiny_st "$o/zero.st" "$z" "$z" "$z" "$z"
    # a NaN or an inf in the weights: the step that meets it is an error
    tiny_st "$o/nan.st" "$z" "$nan" "$z" "$z"
    expect 1 '^mpk-run: error: step 0: the logits have no finite value$' \
                                       "$run" "$o/tiny.mpkb" --cpu --weights "$o/nan.st" --prompt-ids 1 -n 3
    expect 1 '^mpk-run: error: step 1: the logits have no finite value$' \
                                       "$run" "$o/tiny.mpkb" --cpu --weights "$o/nan.st" --prompt-ids 0,1 -n 3
    # rows [1 0 0 0], [inf 0 0 0]: token 0's logits are [1 inf 0 0]
    tiny_st "$o/inf.st" "$one" "$inf" "$z" "$z"
    expect 1 '^mpk-run: error: step 0: the logit of the chosen token 1 is not finite (inf)$' \
                                       "$run" "$o/tiny.mpkb" --cpu --weights "$o/inf.st" --prompt-ids 0 -n 3
    tiny_st "$o/one.st" "$one" "$z" "$z" "$z"
    expect 0 '^0 0 0$'                 "$run" "$o/tiny.mpkb" --cpu --weights "$o/one.st" --prompt-ids 0 -n 3 --dump-logits "$o/l.f32"
    check_out test "$(stat -c %s "$o/l.f32")" = $((3 * 4 * 4))
    expect 0 '^0 0 0$'                 "$run" "$o/tiny.mpkb" --cpu --weights "$o/zero.st" --prompt-ids 1 -n 3
    # -n beyond the memory there is: a message, not a crash (where a
    # memory limit lets mpk-run start at all: not under ASan)
    if sh -c 'ulimit -v 400000; exec "$@"' sh "$run" --help >/dev/null 2>&1; then
        expect 1 'out of memory'       sh -c 'ulimit -v 400000; exec "$@"' sh "$run" "$o/tiny.mpkb" --cpu --weights "$o/zero.st" --prompt-ids 1 -n 1073741824
    else
        echo "cli: mpk-run does not start under ulimit -v (a sanitizer build?): skipping the -n memory test"
    fi
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
