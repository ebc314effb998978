#!/bin/sh
# run-golden.sh - golden tests of mpk's diagnostics and graph output.
#
#   sh tests/run-golden.sh BIN/mpk [--update]      (from the repository root)
#
# tests/diag/NAME.mpk   starts with header comment lines:
#                           # exit: N        required: the expected exit status
#                           # args: ...      optional: extra options for mpk
#                                            (split at blanks, no quoting)
#                       and is run as
#                           BIN check -I stdlib ARGS tests/diag/NAME.mpk 2>&1
#                       whose output must equal tests/diag/NAME.err byte for
#                       byte, and whose exit status must be N.
# tests/graph/NAME.mpk  is run as
#                           BIN build --emit=graph -I stdlib tests/graph/NAME.mpk
#                       whose standard output must equal tests/graph/NAME.graph
#                       and whose exit status must be 0.
#
# MPK_PATH is unset, so imports resolve only through -I stdlib (and the
# directories the compiler always searches). Diagnostics name some files by
# absolute path (files found next to their importer, the import search
# list); so that the expected output does not depend on where the checkout
# lives, the repository root's absolute path is written @ROOT@ in the diag
# outputs. That is the only difference allowed. With --update the expected
# files are rewritten from the current output instead, for a human to review
# (git diff); the exit status is still checked, since it lives in the header.
#
# Prints PASS/FAIL per test (a diff -u after each failure), then one line
# "golden: N passed, M failed". Exit status 1 if any test failed, 2 on a
# usage error.

unset MPK_PATH
LC_ALL=C
export LC_ALL

. "$(dirname "$0")/lib.sh"
test_args run-golden.sh diag "$@"
# The binary may be being rebuilt: give it a few seconds to reappear.
tries=0
while [ ! -x "$bin" ] && [ $tries -lt 10 ]; do
    sleep 1
    tries=$((tries + 1))
done
test_need_exe run-golden.sh

# Runs the compiler: run OUT ERR ARGS... (OUT and ERR may be the same file).
# 126 and 127 (cannot execute) mean that the binary is being rebuilt: wait
# and try again a few times.
run() {
    o=$1 e=$2
    shift 2
    n=0
    while :; do
        if [ "$o" = "$e" ]; then
            $limit "$@" >"$o" 2>&1
        else
            $limit "$@" >"$o" 2>"$e"
        fi
        rc=$?
        case $rc in
        126 | 127) ;;
        *) return ;;
        esac
        n=$((n + 1))
        [ $n -lt 5 ] || return
        sleep 2
    done
}

# A hung compiler is a failure, not a hung test run.
if command -v timeout >/dev/null 2>&1; then
    limit="timeout 20"
else
    limit=
fi

# The repository root as the compiler spells it (realpath, /proc/self/exe),
# quoted for a sed pattern.
root=$(pwd -P)
root_re=$(printf '%s\n' "$root" | sed 's/[][\.*^$/]/\\&/g')

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/mpk-golden.XXXXXX") || exit 2
trap 'rm -rf "$tmpdir"' EXIT
trap 'exit 2' HUP INT TERM
out=$tmpdir/out
err=$tmpdir/err

passed=0
failed=0

pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}

fail() {
    echo "FAIL $1${2:+: $2}"
    failed=$((failed + 1))
}

# Compares $out with the expected file $2 (or rewrites it under --update);
# $1 is the test's name, $3 the extra reason for failure, if any.
compare() {
    name=$1 expected=$2 why=$3
    if [ $update = 1 ]; then
        if ! cmp -s "$out" "$expected" 2>/dev/null; then
            cp "$out" "$expected" || exit 2
            echo "UPDATED $expected"
        fi
        if [ -n "$why" ]; then
            fail "$name" "$why"
        else
            pass "$name"
        fi
        return
    fi
    if [ ! -f "$expected" ]; then
        fail "$name" "${why:+$why; }no $expected (create it with --update)"
        sed 's/^/  | /' "$out"
        return
    fi
    if cmp -s "$out" "$expected"; then
        if [ -n "$why" ]; then
            fail "$name" "$why"
        else
            pass "$name"
        fi
        return
    fi
    fail "$name" "${why:+$why; }output differs from $expected"
    diff -u "$expected" "$out"
}

# ---- diagnostics --------------------------------------------------------

for f in tests/diag/*.mpk; do
    [ -f "$f" ] || continue
    name=${f#tests/diag/}
    name=${name%.mpk}
    args=
    want=
    while IFS= read -r line; do
        case $line in
        '# args:'*) args=${line#'# args:'} ;;
        '# exit:'*) want=${line#'# exit:'} ;;
        '#'* | '') ;;
        *) break ;;
        esac
    done <"$f"
    want=$(printf '%s' "$want" | tr -d ' \t\r')
    case $want in
    '' | *[!0-9]*)
        fail "$name" "no '# exit: N' line at the top of $f"
        continue
        ;;
    esac
    # $args is split at blanks on purpose (but not globbed).
    set -f
    # shellcheck disable=SC2086
    run "$out" "$out" "$bin" check -I stdlib $args "$f"
    set +f
    if grep -q -F "$root" "$out"; then
        sed "s/$root_re/@ROOT@/g" "$out" >"$out.n" && mv "$out.n" "$out"
    fi
    why=
    [ "$rc" = "$want" ] || why="exit status $rc, expected $want"
    compare "$name" "tests/diag/$name.err" "$why"
done

# ---- graphs -------------------------------------------------------------

for f in tests/graph/*.mpk; do
    [ -f "$f" ] || continue
    name=${f#tests/}
    name=${name%.mpk}
    run "$out" "$err" "$bin" build --emit=graph -I stdlib "$f"
    why=
    [ "$rc" = 0 ] || why="exit status $rc, expected 0"
    compare "$name" "tests/graph/${name#graph/}.graph" "$why"
    [ "$rc" = 0 ] || sed 's/^/  stderr: /' "$err"
done

echo "golden: $passed passed, $failed failed"
[ $failed = 0 ]
