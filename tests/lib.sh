# lib.sh - what the test scripts share; sourced, not run:
#     . "$(dirname "$0")/lib.sh"
#
# test_args SCRIPT DIR ARGS...: reads the script's arguments, "BIN/mpk
# [--update]", into $bin (made a path, so that it is not looked up in PATH)
# and $update (1 with --update, else 0). Exits 2 with a usage line naming
# tests/SCRIPT when they are wrong, or when tests/DIR and stdlib are not
# below the working directory (the scripts run from the repository root).
#
# test_need_exe SCRIPT: exits 2 unless $bin is an executable.
#
# ref_info DIR MPK: the HF reference in DIR, a tests/data model (prompt, want, n,
# np, vocab) and the eos ids of its imported model MPK (eos); expect: want
# up to and including the first eos id (HF's decode does not stop there,
# mpk-run does).

test_args() {
    _script=$1 _dir=$2
    shift 2
    bin=
    update=0
    for a in "$@"; do
        case $a in
        --update) update=1 ;;
        -*) test_usage "$_script" ;;
        *) [ -z "$bin" ] || test_usage "$_script"; bin=$a ;;
        esac
    done
    [ -n "$bin" ] || test_usage "$_script"
    case $bin in
    /*) ;;
    */*) ;;
    *) bin=./$bin ;;
    esac
    if [ ! -d "tests/$_dir" ] || [ ! -d stdlib ]; then
        echo "$_script: run me from the repository root" >&2
        exit 2
    fi
}

test_usage() {
    echo "usage: sh tests/$1 BIN/mpk [--update]" >&2
    exit 2
}

test_need_exe() {
    if [ ! -x "$bin" ]; then
        echo "$1: '$bin' is not an executable" >&2
        exit 2
    fi
}

# The counters of a script that ends "NAME: N passed, M failed", and its
# checks (run-sample.sh, run-text.sh); CMD's output goes to $tmp:
#   ok                         one more passed
#   no WHAT                    one more failed, said as "FAIL WHAT"
#   same WHAT FILE CMD...      CMD succeeds and its standard output is FILE,
#                              byte for byte (else its stderr and the diff)
#   expect STATUS PATTERN CMD...
#                              CMD exits STATUS and its standard error
#                              matches PATTERN (grep)
pass=0 fail=0
ok() { pass=$((pass + 1)); }
no() { fail=$((fail + 1)); echo "FAIL $*"; }

same() {
    what=$1 want=$2
    shift 2
    if "$@" >"$tmp/out" 2>"$tmp/err" && cmp -s "$tmp/out" "$want"; then ok; else
        no "$what: $*"; sed 's/^/    /' "$tmp/err"; diff "$tmp/out" "$want" | head -n 20 | sed 's/^/    /'; fi
}

expect() {
    want=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    got=$?
    if [ "$got" -eq "$want" ] && grep -q -e "$pat" "$tmp/err"; then ok; else
        no "$* (exit $got, wanted $want; pattern '$pat')"; sed 's/^/    /' "$tmp/err"; fi
}

ref_info() {
    prompt=$(cat "$1/prompt.ids")
    want=$(cat "$1/generated.ids")
    n=$(echo "$want" | wc -w)
    np=$(echo "$prompt" | tr ',' ' ' | wc -w)
    vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$1/config.json" | head -n 1)
    eos=$(sed -n 's/^param eos = \[*\([0-9, ]*\)\]*$/\1/p' "$2" | tr -d ' ')
    expect=""
    for t in $want; do
        expect="$expect${expect:+ }$t"
        case ",$eos," in *",$t,"*) break ;; esac
    done
}
