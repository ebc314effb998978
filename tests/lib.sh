# lib.sh - what the golden-file test scripts share; sourced, not run:
#     . "$(dirname "$0")/lib.sh"
#
# test_args SCRIPT DIR ARGS...: reads the script's arguments, "BIN/mpk
# [--update]", into $bin (made a path, so that it is not looked up in PATH)
# and $update (1 with --update, else 0). Exits 2 with a usage line naming
# tests/SCRIPT when they are wrong, or when tests/DIR and stdlib are not
# below the working directory (the scripts run from the repository root).
#
# test_need_exe SCRIPT: exits 2 unless $bin is an executable.

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
