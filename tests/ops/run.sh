#!/bin/sh
# run.sh - the op-by-op test (tests/ops/make-ops.c makes the cases): every
# task kind on its own, the executors against a reference worked out from
# mpk-blob(5). Run from the repository root:
#
#     sh tests/ops/run.sh [--gpu] MPK-RUN MAKE-OPS
#
# For every case (make-ops DIR writes them, and DIR/cases lists them):
#   - mpk-run --cpu --order-seed 0 over the case's prompt, -n 1, --dump-logits:
#     every step's row within the case's per-element tolerance of
#     CASE.expect (make-ops --check; the tolerances are explained at the
#     top of make-ops.c), and the token printed one of CASE.next;
#   - --order-seed 1 and 2 (other task orders): the same token and logits
#     identical to seed 0's, bit for bit (the CPU executor sums in index
#     order, so only a missing dependency can change them);
#   - with --gpu, mpk-run on the GPU, --schedule dynamic and static: the
#     same checks against CASE.expect, and every value within twice its
#     tolerance of the CPU's (both lie within it of the reference). Cases
#     marked cpu-only in DIR/cases (allreduce, ALL_RANKS) must be refused
#     before the launch, with exit status 1 and a message.
# One "PASS CASE ..." or "FAIL CASE: ..." line per run, then
# "ops: N passed, M failed"; exit 1 if anything failed.
#
# Environment: MPK_OPS_KEEP=DIR keeps the cases and the dumps in DIR.
set -u
unset MPK_PATH
gpu=0
if [ "${1:-}" = --gpu ]; then
    gpu=1
    shift
fi
usage='usage: sh tests/ops/run.sh [--gpu] MPK-RUN MAKE-OPS'
run=${1:-} mk=${2:-}
if [ ! -x "$run" ] || [ ! -x "$mk" ]; then
    echo "$usage" >&2
    exit 2
fi
if [ -n "${MPK_OPS_KEEP:-}" ]; then
    tmp=$MPK_OPS_KEEP
    mkdir -p "$tmp" || exit 2
else
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpk-ops.XXXXXX") || exit 2
    trap 'rm -rf "$tmp"' EXIT
fi
"$mk" "$tmp" || { echo "ops: make-ops failed"; exit 1; }
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "PASS $*"; }
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
    [ -s "$tmp/err" ] && sed 's/^/    | /' "$tmp/err" | head -5
}

# in_list TOKEN LIST: is TOKEN one of the words of LIST
in_list() {
    case " $2 " in *" $1 "*) return 0 ;; esac
    return 1
}

# exec_case CASE WHAT ARGS...: run mpk-run on CASE with ARGS, dumping the
# logits to $tmp/CASE.WHAT.f32; sets $tok, returns mpk-run's status
exec_case() {
    c=$1 what=$2
    shift 2
    tok=$("$run" "$tmp/$c.mpkb" --weights "$tmp/$c.safetensors" --prompt-ids "$(cat "$tmp/$c.prompt")" -n 1 \
          --dump-logits "$tmp/$c.$what.f32" "$@" 2>"$tmp/err")
}

while read -r c vocab steps where; do
    next=$(cat "$tmp/$c.next")
    if ! exec_case "$c" cpu0 --cpu --order-seed 0; then
        bad "$c: mpk-run --cpu failed"
        continue
    fi
    res=$("$mk" --check "$tmp" "$c" "$tmp/$c.cpu0.f32")
    if [ $? -ne 0 ]; then
        bad "$c: $res"
    elif ! in_list "$tok" "$next"; then
        bad "$c: token $tok, want one of $next"
    else
        ok "$c: $steps steps x $vocab, $res, token $tok"
    fi
    cpu_tok=$tok
    for seed in 1 2; do
        if ! exec_case "$c" "cpu$seed" --cpu --order-seed $seed; then
            bad "$c --order-seed $seed: mpk-run --cpu failed"
        elif ! cmp -s "$tmp/$c.cpu0.f32" "$tmp/$c.cpu$seed.f32" || [ "$tok" != "$cpu_tok" ]; then
            : >"$tmp/err"
            bad "$c --order-seed $seed: token $tok and logits differ from --order-seed 0's ($cpu_tok)"
        else
            ok "$c --order-seed $seed: the same as --order-seed 0, bit for bit"
        fi
    done
    [ $gpu = 1 ] || continue
    for sched in dynamic static; do
        exec_case "$c" "gpu-$sched" --schedule $sched
        rc=$?
        if [ "$where" = cpu-only ]; then
            if [ $rc -eq 1 ] && [ -s "$tmp/err" ] && [ ! -s "$tmp/$c.gpu-$sched.f32" ]; then
                ok "$c [gpu $sched]: refused as it should be ($(head -c 120 "$tmp/err" | head -1))"
            else
                bad "$c [gpu $sched]: exit $rc, want a refusal (exit 1, a message, no logits)"
            fi
            continue
        fi
        if [ $rc -ne 0 ]; then
            bad "$c [gpu $sched]: mpk-run failed (exit $rc)"
            continue
        fi
        res=$("$mk" --check "$tmp" "$c" "$tmp/$c.gpu-$sched.f32" "$tmp/$c.cpu0.f32")
        if [ $? -ne 0 ]; then
            bad "$c [gpu $sched]: $res"
        elif ! in_list "$tok" "$next"; then
            bad "$c [gpu $sched]: token $tok, want one of $next"
        else
            ok "$c [gpu $sched]: $res, token $tok"
        fi
    done
done <"$tmp/cases"

echo "ops: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
