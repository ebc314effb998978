#!/bin/sh
# run-gpu.sh - the GPU executor of mpk-run, on a machine with an NVIDIA GPU
# (`make gpu-check`). Run from the repository root:
#
#     sh tests/run-gpu.sh BIN/mpk BIN/mpk-run BUILD/tests/logits_cmp
#
# What it checks (one PASS or FAIL line per check, then
# "gpu-check: N passed, M failed"; exit 1 if anything failed or nothing passed):
#
#  0. There is a GPU (nvidia-smi lists one); if not: "gpu-check: no GPU
#     here", exit 1. This check is only meaningful on the GPU machine.
#  1. Refusals before launch, on the GPU path: a blob with one byte flipped
#     in the middle of its largest section, another model's weights, a
#     prompt id >= vocab: exit 1, no ids on stdout, a message naming the
#     file (blob) or a weight (checkpoint).
#  2. GPU against the CPU reference executor, for every tests/data model,
#     mpk build --workers=1, 5, 8 and 132, --schedule static and dynamic: the
#     GPU's tokens equal the CPU's (--cpu --order-seed 0) and HF's (generated.ids,
#     up to and including the first eos id, where mpk-run stops), and every
#     logits row (--dump-logits, prompt steps included) is within relative
#     L2 1e-2 of the CPU's row. Prints the worst error per model, and, for
#     information only, the worst error against HF's all_logits.f32 (the CPU
#     executor itself reaches ~1e-2 there: bf16 activations).
#  2b. Sampling: for qwen3-tiny, llama-tiny and qwen3-tied (workers 5),
#     both schedules and a few settings (temperature, top-k, top-p, min-p,
#     seed), the GPU's tokens are the draws that the sampler's definition
#     (mpk/sample.h, through BUILD/tests/sample_replay beside LOGITS_CMP)
#     makes from the GPU's own dumped logits: the tokens the CPU executor's
#     sampler gives for the same logits. The CPU executor's tokens for the
#     same settings are shown next to them, for information (its logits
#     differ by rounding, so a near-tie may go the other way).
#  2c. Chunked prompts: for qwen3-tiny, llama-tiny, qwen3-tied and
#     llama-untied, mpk build --chunk 3, 4 and 16 (workers 5 and 132), and
#     for llama-tp (whose K split) --chunk 16 and 5 with --split-k 2, 3
#     and 4 (workers 5, 132, 7), both schedules: the GPU's tokens equal the CPU executor's (chunked too) and
#     HF's, and every logits row (the prompt's last position on) is within
#     relative L2 1e-2 of the CPU's; sampled tokens over a chunked prompt are
#     the sampler's draws from the GPU's own logits.
#  3. The watchdog: --test-stall on the middle task of a small blob with
#     --watchdog 2000, both schedules: exit 1 within `timeout 120` (not a
#     hang), and stderr names the stall, a step, a task and an event.
#  4. --trace: the JSON parses, and has at least tasks x steps "ph":"X"
#     events (tasks from `mpk dump`, steps from the --dump-logits rows).
#  5. compute-sanitizer: memcheck (--leak-check full) with both schedules and
#     racecheck with the dynamic one, on qwen3-tied, workers 5, -n 4: exit 0,
#     a summary that reports 0 errors (racecheck: 0 hazards, 0 errors,
#     0 warnings), and the right tokens.
#  6. Real shapes against HF (skipped with MPK_GPU_QUICK=1): the presets
#     qwen3-0.6b-shape, llama-3.2-1b-shape and qwen3-8b-shape of
#     tools/hf_reference.py (random weights, HF in float32), made in
#     $MPK_REF_DIR if missing (on CUDA; the 8B one takes ~100 s and writes
#     16 GB). mpk import, mpk build (default workers), then mpk-run on the
#     GPU with -n 32 and --dump-logits, both schedules (the 8B one: dynamic,
#     and static too if the time spent so far allows). The yardstick is HF's
#     own bf16 inference on the same tokens (tools/hf_bf16_logits.py, made
#     once per reference): mpk stores activations in bf16, so it cannot be
#     closer to fp32 than bf16 allows. tests/real_cmp.py passes a run when
#     its ids are HF's, or part from them at a step k where HF's gap between
#     its token and mpk's is within 4x that row's RMS logit error (a
#     near-tie at this precision), and every row 0..k is within relative L2
#     max(1e-2, 1.25 x HF bf16's error at that row) of HF fp32.
#     Each preset also with the prompt in chunk steps (--chunk 64, and
#     --chunk 64 --split-k auto), judged the same way from the prompt's last
#     position on.
#     For 0.6B and 1B, also the GPU against the CPU executor over the prompt
#     and 2 tokens (and so both chunk blobs): identical ids, every row within relative L2 max(1e-2,
#     HF bf16's error at the last prompt position): at 16-28 layers the two
#     bf16 executors differ by about half their distance from fp32.
#
# Environment:
#   MPK_REF_DIR        where the real-shape references are, or are made
#                      (default /tmp/mpk-ref)
#   MPK_GPU_QUICK=1    skip the real shapes (6)
#   MPK_GPU_LOG=DIR    copy the logs there (every command, its exit status and
#                      time in commands.txt, its stdout and stderr, this
#                      script's output in gpu-check.txt)
#   MPK_GPU_KEEP=1     keep the temporary directory (blobs, logits, traces)
#   MPK_GPU_PRESETS    the real-shape presets (default the three above)
#   MPK_GPU_BUDGET     seconds; the 8B static run is made only if the time
#                      spent so far plus the 8B dynamic run's is below this
#                      (default 420)
#   MPK_GPU_SAN_TIMEOUT  seconds allowed to each compute-sanitizer run
#                      (default 240)
#
# What it assumes of mpk-run without --cpu (the GPU executor): the same
# command line, stdout, --dump-logits rows and exit statuses as with --cpu,
# plus --schedule static|dynamic, --watchdog MS, --test-stall TASK and
# --trace FILE.json; refusals (bad blob, weights, prompt ids) before the
# kernel is launched, with the CPU path's messages ("FILE: problem",
# "FILE: tensor 'NAME': problem").
set -u
unset MPK_PATH
. "$(dirname "$0")/lib.sh" # ref_info
usage='usage: sh tests/run-gpu.sh MPK MPK-RUN LOGITS_CMP'
mpk=${1:-} run=${2:-} cmp=${3:-}
if [ -z "$mpk" ] || [ -z "$run" ] || [ -z "$cmp" ]; then
    echo "$usage" >&2
    exit 2
fi
for b in "$mpk" "$run" "$cmp"; do
    if [ ! -x "$b" ]; then
        echo "run-gpu.sh: '$b' is not an executable; $usage" >&2
        exit 2
    fi
done

if [ ! -d tests/data ] || [ ! -f tools/hf_reference.py ]; then
    echo "run-gpu.sh: run it from the repository root" >&2
    exit 2
fi

# 0. A GPU, or nothing to check.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu-check: no GPU here"
    exit 1
fi

TOL=1e-2
REF_DIR=${MPK_REF_DIR:-/tmp/mpk-ref}
QUICK=${MPK_GPU_QUICK:-0}
PRESETS=${MPK_GPU_PRESETS:-qwen3-0.6b-shape llama-3.2-1b-shape qwen3-8b-shape}
BUDGET=${MPK_GPU_BUDGET:-420}
SAN_TIMEOUT=${MPK_GPU_SAN_TIMEOUT:-240}
SMALL=qwen3-tied                  # the smallest tests/data model

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpk-gpu.XXXXXX") || exit 2
log=$tmp/log work=$tmp/work
mkdir -p "$log" "$work" || exit 2
finish() {
    if [ -n "${MPK_GPU_LOG:-}" ]; then
        if mkdir -p "$MPK_GPU_LOG" && cp -R "$log/." "$MPK_GPU_LOG/"; then
            echo "gpu-check: logs copied to $MPK_GPU_LOG"
        else
            echo "gpu-check: could not copy the logs to $MPK_GPU_LOG"
        fi
    fi
    if [ "${MPK_GPU_KEEP:-0}" = 1 ]; then
        echo "gpu-check: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pass=0 fail=0
start=$(date +%s)
n_cmd=0 rc=0 out=/dev/null err=/dev/null cmdline='' secs=0 took=0

# say TEXT: print a line, and keep it in the log
say() {
    printf '%s\n' "$*"
    printf '%s\n' "$*" >>"$log/gpu-check.txt"
}
# indent FILE [LINES]: the first lines of FILE, indented
indent() {
    if [ -s "$1" ]; then
        head -n "${2:-12}" "$1" | sed 's/^/    | /' | tee -a "$log/gpu-check.txt"
    fi
}
good() {
    pass=$((pass + 1))
    say "PASS $*"
}
# bad WHAT: a failure that the lines after it explain
bad() {
    fail=$((fail + 1))
    say "FAIL $*"
}
# badcmd WHAT: a failure of the last command: the command, how it ended,
# the first lines of its stderr
badcmd() {
    bad "$*"
    say "    command: $cmdline"
    case $rc in
    124 | 137) say "    timed out after $secs s" ;;
    *) say "    exit status $rc after $took s" ;;
    esac
    if [ -s "$err" ]; then
        say "    stderr ($err):"
        indent "$err" 15
    else
        say "    (nothing on stderr)"
    fi
}
elapsed() {
    echo $(($(date +%s) - start))
}

if command -v timeout >/dev/null 2>&1; then
    tmo() { timeout -k 10 "$@"; }
else
    tmo() {
        shift
        "$@"
    }
fi
# runc LABEL SECS CMD...: run CMD with a time limit; its stdout in $out and
# its stderr in $err (both in the log), its exit status in $rc (124 or 137:
# timed out), its time in $took
runc() {
    n_cmd=$((n_cmd + 1))
    label=$(printf '%03d-%s' "$n_cmd" "$1")
    secs=$2
    shift 2
    out=$log/$label.out err=$log/$label.err
    cmdline=$*
    printf '[%s] %s\n' "$label" "$cmdline" >>"$log/commands.txt"
    t0=$(date +%s)
    tmo "$secs" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    took=$(($(date +%s) - t0))
    printf '[%s] exit %d after %d s\n' "$label" "$rc" "$took" >>"$log/commands.txt"
}
# fmax A B: the larger of two numbers ("%.3e" from logits_cmp)
fmax() {
    awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'
}
count() {
    echo $#
}
# tasks BLOB: the number of tasks, from `mpk dump`'s first line
tasks() {
    "$mpk" dump "$1" 2>/dev/null | head -n 1 | sed -n 's/.* \([0-9][0-9]*\) tasks.*/\1/p'
}

# first_ids N IDS...: the first N of IDS, stopping after an eos id
first_ids() {
    k=$1 acc=""
    shift
    for t in "$@"; do
        [ "$k" -gt 0 ] || break
        acc="$acc${acc:+ }$t"
        k=$((k - 1))
        case ",$eos," in *",$t,"*) break ;; esac
    done
    echo "$acc"
}
# blob_for MODEL WORKERS: tests/data/MODEL imported and built for WORKERS
# workers (once); sets $blob, or counts a failure and returns 1
blob_for() {
    blob=$work/$1-w$2.mpkb
    [ -s "$blob" ] && return 0
    if [ ! -s "$work/$1.mpk" ]; then
        runc "import-$1" 60 "$mpk" import "tests/data/$1/config.json" -o "$work/$1.mpk"
        if [ "$rc" -ne 0 ]; then
            rm -f "$work/$1.mpk"
            badcmd "$1: mpk import"
            return 1
        fi
    fi
    runc "build-$1-w$2" 300 "$mpk" build --workers="$2" "$work/$1.mpk" -o "$blob"
    if [ "$rc" -ne 0 ] || [ ! -s "$blob" ]; then
        rm -f "$blob"
        badcmd "$1: mpk build --workers=$2"
        return 1
    fi
}

say "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
say "gpu-check: logs in $log"

# ---------------------------------------------------------------------------
# 1. Refusals before launch
# ---------------------------------------------------------------------------
sd=tests/data/$SMALL
if blob_for "$SMALL" 5; then
    ref_info "$sd" "$work/$SMALL.mpk"
    # One byte flipped in the middle of the blob's largest section (the bytes
    # between sections are not covered by any CRC): read the section table
    # (mpk-blob(5): table offset at byte 24, nsections at 32, records of 32
    # bytes: kind, crc, offset, size).
    badblob=$work/flipped.mpkb
    cp "$blob" "$badblob"
    toff=$(od -An -tu8 -j 24 -N8 "$blob" | tr -d ' ')
    nsec=$(od -An -tu4 -j 32 -N4 "$blob" | tr -d ' ')
    best=0 at=$(($(wc -c <"$blob") / 2)) i=0
    while [ "$i" -lt "${nsec:-0}" ] && [ "$i" -lt 64 ]; do
        soff=$(od -An -tu8 -j $((toff + 32 * i + 8)) -N8 "$blob" | tr -d ' ')
        ssize=$(od -An -tu8 -j $((toff + 32 * i + 16)) -N8 "$blob" | tr -d ' ')
        if [ "$ssize" -gt "$best" ]; then
            best=$ssize at=$((soff + ssize / 2))
        fi
        i=$((i + 1))
    done
    byte=$(od -An -tu1 -j "$at" -N1 "$blob" | tr -d ' ')
    nb=$((byte ^ 255))
    [ "$nb" -ne 0 ] || nb=1 # no NUL through printf
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' "$nb")" | dd of="$badblob" bs=1 seek="$at" count=1 conv=notrunc 2>/dev/null
    if [ "$(cmp -l "$blob" "$badblob" 2>/dev/null | wc -l)" -ne 1 ]; then
        bad "refusal: could not flip byte $at of a copy of $blob"
    else
        runc refuse-flipped 120 "$run" "$badblob" --weights "$sd" --prompt-ids "$prompt" -n 4
        if [ "$rc" -ne 1 ]; then
            badcmd "refusal: a blob with byte $at flipped: exit $rc, not 1"
        elif [ -s "$out" ]; then
            badcmd "refusal: a blob with byte $at flipped: ids on stdout: $(head -c 200 "$out")"
        elif ! grep -qF "$badblob" "$err"; then
            badcmd "refusal: a blob with byte $at flipped: the message does not name $badblob"
        else
            good "refusal: a blob with byte $at (mid-section, of $best bytes) flipped: $(head -n 1 "$err")"
        fi
    fi
    # A prompt id >= vocab
    runc refuse-prompt 120 "$run" "$blob" --weights "$sd" --prompt-ids "1,$vocab" -n 4
    if [ "$rc" -ne 1 ] || [ -s "$out" ] || [ ! -s "$err" ]; then
        badcmd "refusal: prompt id $vocab (vocab $vocab): wanted exit 1, a message and no ids"
    else
        good "refusal: prompt id $vocab: $(head -n 1 "$err")"
    fi
fi
# Another model's weights: qwen3-tiny's blob, llama-tiny's checkpoint
if blob_for qwen3-tiny 5; then
    runc refuse-weights 120 "$run" "$blob" --weights tests/data/llama-tiny --prompt-ids 1,2,3 -n 4
    if [ "$rc" -ne 1 ] || [ -s "$out" ]; then
        badcmd "refusal: qwen3-tiny with llama-tiny's weights: wanted exit 1 and no ids"
    elif ! grep -Eq "(model|lm_head)\.[A-Za-z0-9_.]*weight" "$err"; then
        badcmd "refusal: qwen3-tiny with llama-tiny's weights: no weight named in the message"
    else
        good "refusal: qwen3-tiny with llama-tiny's weights: $(grep -c . "$err") lines, first: $(head -n 1 "$err")"
    fi
fi
say "gpu-check: refusals done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 2. GPU against the CPU executor (and HF's tokens), every tests/data model
# ---------------------------------------------------------------------------
for dir in tests/data/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    [ -f "$dir/config.json" ] || continue
    worst=0 worst_hf=0 runs=0
    for workers in 1 5 8 132; do
        blob_for "$name" "$workers" || continue
        ref_info "$dir" "$work/$name.mpk"
        cpu=$work/$name-w$workers-cpu.f32
        runc "cpu-$name-w$workers" 300 "$run" "$blob" --weights "$dir" --cpu --order-seed 0 \
            --prompt-ids "$prompt" -n "$n" --dump-logits "$cpu"
        if [ "$rc" -ne 0 ]; then
            badcmd "gpu $name workers=$workers: the CPU reference run failed"
            continue
        fi
        cpu_ids=$(cat "$out")
        for sched in static dynamic; do
            what="gpu $name workers=$workers schedule=$sched"
            gpu=$work/$name-w$workers-$sched.f32
            runc "gpu-$name-w$workers-$sched" 120 "$run" "$blob" --weights "$dir" --schedule "$sched" \
                --prompt-ids "$prompt" -n "$n" --dump-logits "$gpu"
            if [ "$rc" -ne 0 ]; then
                badcmd "$what: mpk-run failed"
                continue
            fi
            got=$(cat "$out")
            if [ "$got" != "$cpu_ids" ]; then
                badcmd "$what: tokens differ from the CPU executor's"
                say "    gpu  $got"
                say "    cpu  $cpu_ids"
                continue
            fi
            if [ "$got" != "$expect" ]; then
                badcmd "$what: tokens differ from HF's"
                say "    gpu  $got"
                say "    hf   $expect"
                continue
            fi
            # shellcheck disable=SC2086
            ntok=$(count $got)
            rows=$((np + ntok - 1))
            size=$((rows * vocab * 4))
            if [ "$(wc -c <"$gpu")" -ne "$size" ] || [ "$(wc -c <"$cpu")" -ne "$size" ]; then
                bad "$what: --dump-logits sizes: gpu $(wc -c <"$gpu"), cpu $(wc -c <"$cpu") bytes; want $rows rows of $vocab floats ($size bytes)"
                continue
            fi
            r=0 w=0 ok=1
            while [ "$r" -lt "$rows" ]; do
                if ! rel=$("$cmp" "$gpu" "$r" "$cpu" "$r" "$vocab" "$TOL" 2>"$log/cmp.err"); then
                    bad "$what: logits row $r: relative L2 error against the CPU ${rel:-?} > $TOL"
                    say "    command: $cmdline"
                    say "    compared: $cmp $gpu $r $cpu $r $vocab $TOL"
                    indent "$log/cmp.err"
                    ok=0
                    break
                fi
                w=$(fmax "$w" "$rel")
                r=$((r + 1))
            done
            [ "$ok" = 1 ] || continue
            worst=$(fmax "$worst" "$w")
            # information only: against HF's rows (the CPU reaches ~1e-2 too)
            if [ -f "$dir/all_logits.f32" ]; then
                i=0
                while [ "$i" -lt "$ntok" ]; do
                    rel=$("$cmp" "$gpu" $((np - 1 + i)) "$dir/all_logits.f32" "$i" "$vocab" 1e30 2>/dev/null) &&
                        worst_hf=$(fmax "$worst_hf" "$rel")
                    i=$((i + 1))
                done
            fi
            runs=$((runs + 1))
            good "$what: $ntok tokens = CPU's = HF's; $rows logits rows within $TOL of the CPU's (worst $w) [${took} s]"
        done
    done
    if [ "$runs" -gt 0 ]; then
        say "gpu-check: $name: worst relative L2 GPU vs CPU $worst over $runs runs (all rows); GPU vs HF $worst_hf (information)"
    else
        say "gpu-check: $name: no GPU run passed"
    fi
done
say "gpu-check: GPU vs CPU done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 2b. Sampling: the GPU's tokens are the sampler's draws from its logits
# ---------------------------------------------------------------------------
replay=$(dirname "$cmp")/sample_replay
if [ ! -x "$replay" ]; then
    bad "sampling: no $replay (make gpu-check builds it)"
else
    for name in qwen3-tiny llama-tiny qwen3-tied; do
        dir=tests/data/$name
        blob_for "$name" 5 || continue
        ref_info "$dir" "$work/$name.mpk"
        for set in "1 0 1 0 1" "0.7 20 0.9 0 2" "1.5 0 0.8 0.02 3" "0.9 40 0.95 0.05 18446744073709551615"; do
            # shellcheck disable=SC2086
            set -- $set
            flags="--temperature $1 --top-k $2 --top-p $3 --min-p $4 --seed $5"
            # shellcheck disable=SC2086
            runc "cpu-sample-$name-$5" 300 "$run" "$blob" --weights "$dir" --cpu --prompt-ids "$prompt" -n "$n" $flags
            cpu_ids=$(cat "$out")
            for sched in static dynamic; do
                what="sampling $name schedule=$sched $flags"
                lf=$work/$name-sample-$sched.f32
                # shellcheck disable=SC2086
                runc "gpu-sample-$name-$sched-$5" 120 "$run" "$blob" --weights "$dir" --schedule "$sched" \
                    --prompt-ids "$prompt" -n "$n" $flags --dump-logits "$lf"
                if [ "$rc" -ne 0 ]; then
                    badcmd "$what: mpk-run failed"
                    continue
                fi
                got=$(cat "$out")
                if "$replay" "$lf" "$vocab" "$np" "$got" "$@" >"$log/replay.out" 2>&1; then
                    good "$what: the sampler's draws from the GPU's logits [${took} s]"
                else
                    bad "$what: not the sampler's draws from the GPU's own logits"
                    say "    command: $cmdline"
                    indent "$log/replay.out"
                fi
                [ "$got" = "$cpu_ids" ] || say "    (information) gpu $got; cpu $cpu_ids"
            done
        done
    done
fi
say "gpu-check: sampling done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 2c. Prompts in chunk steps (mpk build --chunk): the GPU against the CPU
# ---------------------------------------------------------------------------
for name in qwen3-tiny llama-tiny qwen3-tied llama-untied llama-tp; do
    dir=tests/data/$name
    blob_for "$name" 5 || continue
    ref_info "$dir" "$work/$name.mpk"
    cfgs="3:5 4:132 16:5"
    # llama-tp's K are multiples of 32: its matvecs split (matvec_part, part_sum)
    [ "$name" = llama-tp ] && cfgs="16:5:2 16:132:3 5:7:4"
    for cfg in $cfgs; do
        # shellcheck disable=SC2086
        set -- $(echo "$cfg" | tr : ' ')
        cb=$work/$name-c$1-w$2.mpkb split=""
        [ $# -ge 3 ] && cb=$work/$name-c$1-w$2-s$3.mpkb split="--split-k=$3"
        # shellcheck disable=SC2086
        runc "build-$name-c$1-w$2$split" 300 "$mpk" build --chunk "$1" --workers="$2" $split "$work/$name.mpk" -o "$cb"
        if [ "$rc" -ne 0 ]; then
            badcmd "chunk: $name --chunk $1 --workers=$2 $split: mpk build"
            continue
        fi
        if [ -n "$split" ] && ! "$mpk" dump "$cb" 2>/dev/null | grep -q matvec_part; then
            bad "chunk: $name --chunk $1 $split: no matvec_part task in the blob"
            continue
        fi
        runc "cpu-chunk-$name-c$1-w$2" 300 "$run" "$cb" --weights "$dir" --cpu --order-seed 0 \
            --prompt-ids "$prompt" -n "$n" --dump-logits "$work/cpu-chunk.f32"
        if [ "$rc" -ne 0 ]; then
            badcmd "chunk: $name --chunk $1: the CPU executor"
            continue
        fi
        cpu_ids=$(cat "$out")
        for sched in static dynamic; do
            what="chunk: $name --chunk $1 --workers=$2${split:+ $split} schedule=$sched"
            runc "gpu-chunk-$name-c$1-w$2-$sched" 120 "$run" "$cb" --weights "$dir" --schedule "$sched" \
                --prompt-ids "$prompt" -n "$n" --dump-logits "$work/gpu-chunk.f32"
            if [ "$rc" -ne 0 ]; then
                badcmd "$what: mpk-run failed"
                continue
            fi
            got=$(cat "$out")
            if [ "$got" != "$cpu_ids" ] || [ "$got" != "$expect" ]; then
                bad "$what: tokens"
                say "    gpu  $got"
                say "    cpu  $cpu_ids"
                say "    want $expect"
                continue
            fi
            # shellcheck disable=SC2086
            rows=$(count $got)
            worst=0 ok=1
            r=0
            while [ "$r" -lt "$rows" ]; do
                if ! e=$("$cmp" "$work/gpu-chunk.f32" "$r" "$work/cpu-chunk.f32" "$r" "$vocab" $TOL); then
                    bad "$what: logits row $r (position $((np - 1 + r))) relative L2 $e > $TOL"
                    ok=0
                    break
                fi
                worst=$(fmax "$worst" "$e")
                r=$((r + 1))
            done
            [ $ok = 1 ] && good "$what: HF's tokens, $rows logits rows within $worst of the CPU's [${took} s]"
        done
    done
    # sampling over a chunked prompt: the draws from the GPU's own logits,
    # whose first row is the prompt's last position
    if [ -x "$replay" ] && [ -s "$work/$name-c3-w5.mpkb" ]; then
        flags="--temperature 0.8 --top-k 20 --top-p 0.9 --min-p 0 --seed 5"
        # shellcheck disable=SC2086
        runc "gpu-chunk-sample-$name" 120 "$run" "$work/$name-c3-w5.mpkb" --weights "$dir" --prompt-ids "$prompt" \
            -n "$n" $flags --dump-logits "$work/gpu-chunk-sample.f32"
        if [ "$rc" -ne 0 ]; then
            badcmd "chunk: sampling $name --chunk 3: mpk-run failed"
        elif "$replay" "$work/gpu-chunk-sample.f32" "$vocab" "$np" "$(cat "$out")" 0.8 20 0.9 0 5 $((np - 1)) \
            >"$log/replay.out" 2>&1; then
            good "chunk: sampling $name --chunk 3 $flags: the sampler's draws from the GPU's logits"
        else
            bad "chunk: sampling $name --chunk 3: not the sampler's draws from the GPU's own logits"
            indent "$log/replay.out"
        fi
    fi
done
say "gpu-check: chunks done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 3. The watchdog, and 4. --trace
# ---------------------------------------------------------------------------
if blob_for "$SMALL" 5; then
    ref_info "$sd" "$work/$SMALL.mpk"
    ntasks=$(tasks "$blob")
    if [ -z "$ntasks" ]; then
        bad "watchdog/trace: cannot read the task count from '$mpk dump $blob | head -1'"
    else
        stall=$((ntasks / 2))
        for sched in static dynamic; do
            what="watchdog: --test-stall $stall of $ntasks tasks, schedule=$sched"
            runc "stall-$sched" 120 "$run" "$blob" --weights "$sd" --prompt-ids "$prompt" -n 4 \
                --schedule "$sched" --test-stall "$stall" --watchdog 2000
            if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
                badcmd "$what: hung (killed by timeout)"
            elif [ "$rc" -ne 1 ]; then
                badcmd "$what: exit $rc, not 1"
            elif ! grep -qi 'stall' "$err"; then
                badcmd "$what: no 'stall' on stderr"
            elif ! grep -qi 'step' "$err" || ! grep -qi 'task' "$err" || ! grep -qi 'event' "$err"; then
                badcmd "$what: the message does not name a step, a task and an event"
            else
                good "$what: exit 1 after $took s: $(grep -i -m 1 stall "$err")"
            fi
        done
        if ! command -v python3 >/dev/null 2>&1; then
            bad "trace: no python3 to read the JSON with"
        else
            for sched in dynamic static; do
                what="trace: schedule=$sched"
                tr=$work/trace-$sched.json tl=$work/trace-$sched.f32
                runc "trace-$sched" 120 "$run" "$blob" --weights "$sd" --prompt-ids "$prompt" -n 4 \
                    --schedule "$sched" --trace "$tr" --dump-logits "$tl"
                if [ "$rc" -ne 0 ]; then
                    badcmd "$what: mpk-run failed"
                    continue
                fi
                steps=$(($(wc -c <"$tl") / (vocab * 4)))
                min=$((ntasks * steps))
                runc "trace-read-$sched" 120 python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
assert isinstance(ev, list) and ev, "traceEvents is empty"
x = [e for e in ev if isinstance(e, dict) and e.get("ph") == "X"]
print(len(ev), len(x))
if len(x) < int(sys.argv[2]):
    sys.exit("%d \"ph\":\"X\" events, fewer than %s (tasks x steps)" % (len(x), sys.argv[2]))
' "$tr" "$min"
                if [ "$rc" -ne 0 ]; then
                    badcmd "$what: $tr is not a trace with >= $ntasks tasks x $steps steps = $min events"
                else
                    # shellcheck disable=SC2046
                    set -- $(cat "$out")
                    good "$what: $2 X events (of $1) >= $ntasks tasks x $steps steps, $(wc -c <"$tr") bytes"
                fi
            done
        fi
    fi
fi

# Non-finite logits stop the run with the CPU executor's message, in both
# schedules; the model has no KV cache, so nothing but -n bounds its steps
# (the event counters are checked for the steps run, not for max_seq).
printf 'input token : i32[1]\nweight e : f32[4, 4] = "e"\ngraph g {\n  x = embed(e, token)\n  logits = matmul(x, e)\n  output next = argmax(logits)\n}\n' >"$tmp/nf.mpk"
"$mpk" build "$tmp/nf.mpk" -o "$tmp/nf.mpkb" >/dev/null 2>&1 || bad "non-finite: mpk build of the 4 x 4 model"
# nf_st FILE V0 .. V15: the one f32 weight e
nf_st() {
    f=$1; shift
    python3 -c 'import json, struct, sys
h = json.dumps({"e": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<16f", *map(float, sys.argv[2:])))' "$f" "$@"
}
nf_st "$tmp/zero.st" 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
nf_st "$tmp/nan.st" nan nan nan nan nan nan nan nan nan nan nan nan nan nan nan nan
nf_st "$tmp/inf.st" 0 inf 0 0 0 0 0 0 0 0 0 0 0 0 0 0
for sched in static dynamic; do
    for c in "zero:0:^0 0 0$" "nan:1:^mpk-run: error: step 0: the logits have no finite value$" \
             "inf:1:^mpk-run: error: step 0: the logit of the chosen token 0 is not finite (inf)$"; do
        w=${c%%:*}; rest=${c#*:}; want=${rest%%:*}; pat=${rest#*:}
        out=$("$run" "$tmp/nf.mpkb" --weights "$tmp/$w.st" --prompt-ids 0 -n 3 --schedule $sched 2>&1)
        got=$?
        if [ "$got" = "$want" ] && printf '%s\n' "$out" | grep -q "$pat"; then
            good "non-finite: $w weights, schedule=$sched: exit $got: $out"
        else
            bad "non-finite: $w weights, schedule=$sched: exit $got (wanted $want), output: $out"
        fi
    done
done
# --schedule auto (the default): dynamic for a blob placed for 5 workers,
# static for one placed for the GPU's SM count (the stats line says which)
sdir=tests/data/$SMALL
sprompt=$(tr -s ' \n' ',' <"$sdir/prompt.ids" | sed 's/^,//; s/,$//')
if blob_for "$SMALL" 5; then
    runc "auto-$SMALL-w5" 120 "$run" "$blob" --weights "$sdir" --prompt-ids "$sprompt" -n 4 --stats
    sms=$(sed -n 's/^mpk-run: gpu: .*schedule, \([0-9][0-9]*\) workers).*/\1/p' "$err")
    if [ "$rc" -eq 0 ] && grep -q '^mpk-run: gpu: .*(dynamic schedule, ' "$err"; then
        good "schedule auto: workers=5 on $sms SMs ran the dynamic schedule"
    else
        badcmd "schedule auto: workers=5: exit $rc, no 'dynamic schedule' in the stats line"
    fi
    if [ -n "$sms" ] && blob_for "$SMALL" "$sms"; then
        runc "auto-$SMALL-w$sms" 120 "$run" "$blob" --weights "$sdir" --prompt-ids "$sprompt" -n 4 --stats
        if [ "$rc" -eq 0 ] && grep -q '^mpk-run: gpu: .*(static schedule, ' "$err"; then
            good "schedule auto: workers=$sms (the SM count) ran the static schedule"
        else
            badcmd "schedule auto: workers=$sms: exit $rc, no 'static schedule' in the stats line"
        fi
    fi
fi
say "gpu-check: watchdog and trace done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 5. compute-sanitizer
# ---------------------------------------------------------------------------
san=$(command -v compute-sanitizer 2>/dev/null)
[ -n "$san" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || san=/usr/local/cuda/bin/compute-sanitizer
if [ -z "$san" ]; then
    bad "compute-sanitizer: not on PATH nor at /usr/local/cuda/bin/compute-sanitizer"
elif blob_for "$SMALL" 5; then
    ref_info "$sd" "$work/$SMALL.mpk"
    # shellcheck disable=SC2086
    want4=$(first_ids 4 $want)
    for tool_sched in memcheck:static memcheck:dynamic racecheck:dynamic; do
        tool=${tool_sched%%:*} sched=${tool_sched#*:}
        what="compute-sanitizer $tool: $SMALL workers=5 -n 4 schedule=$sched"
        if [ "$tool" = memcheck ]; then
            set -- --tool memcheck --error-exitcode 1 --leak-check full
        else
            set -- --tool racecheck --error-exitcode 1
        fi
        # a long watchdog: the sanitizer slows the kernel down many times
        runc "$tool-$sched" "$SAN_TIMEOUT" "$san" "$@" "$run" "$blob" --weights "$sd" --prompt-ids "$prompt" -n 4 \
            --schedule "$sched" --watchdog 600000
        both=$log/$tool-$sched.all
        cat "$out" "$err" >"$both"
        ids=$(grep -v '^=========' "$out" | tr -s ' \n' '  ' | sed 's/^ *//; s/ *$//')
        nonzero=$(grep -E 'ERROR SUMMARY: *[1-9]|RACECHECK SUMMARY: *[1-9]|\( *[1-9][0-9]* errors?,|, *[1-9][0-9]* warnings?\)' "$both" | head -n 3)
        if grep -q 'ERROR SUMMARY: 0 errors' "$both" ||
            { [ "$tool" = racecheck ] && grep -q 'RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)' "$both"; }; then
            summary=yes
        else
            summary=no
        fi
        if [ "$rc" -ne 0 ] || [ -n "$nonzero" ] || [ "$summary" = no ]; then
            badcmd "$what: exit $rc, summary: $(grep -E 'SUMMARY' "$both" | head -n 2 | tr '\n' ' ')"
            grep -m 20 '^=========' "$both" | sed 's/^/    | /' | tee -a "$log/gpu-check.txt"
        elif [ "$ids" != "$want4" ]; then
            badcmd "$what: clean, but the ids are '$ids', not '$want4'"
        else
            good "$what: $(grep -E 'SUMMARY' "$both" | sed 's/^=* *//' | tr '\n' ' ')[$took s]"
        fi
    done
fi
say "gpu-check: compute-sanitizer done ($(elapsed) s so far)"

# ---------------------------------------------------------------------------
# 6. Real shapes against HF
# ---------------------------------------------------------------------------
# ref_ok DIR: a complete reference with every step's logits
ref_ok() {
    for f in config.json model.safetensors reference.json prompt.ids generated.ids all_logits.f32; do
        [ -s "$1/$f" ] || return 1
    done
    v=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$1/config.json" | head -n 1)
    # shellcheck disable=SC2046
    g=$(count $(cat "$1/generated.ids"))
    [ -n "$v" ] && [ "$g" -gt 0 ] && [ "$(wc -c <"$1/all_logits.f32")" -eq $((g * v * 4)) ]
}

# real_verdict DIR LOGITS: real_cmp.py's verdict on the last run (its ids
# in $out, its logits LOGITS) against the reference in DIR
real_verdict() {
    verdict=$(python3 tests/real_cmp.py "$1" "$2" "$np" "$(cat "$out")" "$expect" 2>&1)
    case $verdict in
    PASS*) good "$what: ${verdict#PASS } [$took s]" ;;
    *) bad "$what: ${verdict#FAIL }" ;;
    esac
    say "    mpk  $(cat "$out")"
    say "    hf   $expect"
}

# real_run PRESET SCHED: one GPU run of a real-shape blob against HF
real_run() {
    p=$1 sched=$2 d=$REF_DIR/$1
    what="real $p schedule=$sched"
    lf=$work/$p-$sched.f32
    runc "real-$p-$sched" 300 "$run" "$work/$p.mpkb" --weights "$d" --schedule "$sched" \
        --prompt-ids "$prompt" -n "$n" --dump-logits "$lf"
    if [ "$rc" -ne 0 ]; then
        badcmd "$what: mpk-run failed"
        return
    fi
    real_verdict "$d" "$lf"
}

# real_chunk PRESET: the prompt in chunk steps (mpk build --chunk 64),
# judged against HF as real_run is. A chunked prompt computes the logits of
# its last position only, so HF's fp32 rows stand in for the positions
# before it (they compare as equal); every row from the prompt's last
# position on is mpk's.
real_chunk() {
    p=$1 d=$REF_DIR/$1 s=${2:+-s$2}
    what="real $p --chunk 64${2:+ --split-k=$2}"
    runc "build-$p-c64$s" 300 "$mpk" build --chunk 64 ${2:+--split-k=$2} "$work/$p.mpk" -o "$work/$p-c64$s.mpkb"
    [ "$rc" -eq 0 ] || { badcmd "$what: mpk build"; return; }
    runc "real-$p-c64$s" 300 "$run" "$work/$p-c64$s.mpkb" --weights "$d" --prompt-ids "$prompt" -n "$n" \
        --dump-logits "$work/$p-c64$s.f32"
    [ "$rc" -eq 0 ] || { badcmd "$what: mpk-run failed"; return; }
    lf=$work/$p-c64$s-full.f32
    head -c $(((np - 1) * vocab * 4)) "$d/all_logits.f32" >"$lf"
    cat "$work/$p-c64$s.f32" >>"$lf"
    real_verdict "$d" "$lf"
}

# real_cpu PRESET: the GPU against the CPU executor at real shapes, over the
# prompt and two generated tokens (the CPU executor is slow at this size)
# (real_cpu PRESET -c64: the same with the chunk blob, both executors
# chunked, so the chunk graph's GPU kernels at real shapes (head dim 128,
# 64-row matvecs) meet the CPU's; its logits rows start at the prompt's
# last position)
real_cpu() {
    p=$1 d=$REF_DIR/$1 sfx=${2:-}
    what="real $p: GPU vs CPU${sfx:+ ($sfx)}"
    runc "realcpu-$p$sfx-cpu" 300 "$run" "$work/$p$sfx.mpkb" --weights "$d" --cpu --order-seed 0 \
        --prompt-ids "$prompt" -n 2 --dump-logits "$work/$p-cpu.f32"
    [ "$rc" -eq 0 ] || { badcmd "$what: mpk-run --cpu failed"; return; }
    cpu_ids=$(cat "$out") cpu_took=$took
    runc "realcpu-$p$sfx-gpu" 300 "$run" "$work/$p$sfx.mpkb" --weights "$d" \
        --prompt-ids "$prompt" -n 2 --dump-logits "$work/$p-gpu.f32"
    [ "$rc" -eq 0 ] || { badcmd "$what: mpk-run failed"; return; }
    [ "$(cat "$out")" = "$cpu_ids" ] || { bad "$what: ids $(cat "$out"), CPU $cpu_ids"; return; }
    # Two bf16 executors that sum in different orders drift apart with
    # depth as each drifts from fp32: the bound is HF bf16's own distance
    # from fp32 at the last prompt position (at least 1e-2).
    yard=$("$cmp" "$d/bf16_logits.f32" 0 "$d/all_logits.f32" 0 "$vocab" 1e30 2>/dev/null)
    bound=$(fmax "$TOL" "${yard:-0}")
    i=0 w=0 last=$np
    [ -n "$sfx" ] && last=1 # a chunked prompt: the last position's row, then one
    while [ "$i" -le "$last" ]; do
        rel=$("$cmp" "$work/$p-gpu.f32" "$i" "$work/$p-cpu.f32" "$i" "$vocab" "$bound" 2>/dev/null) ||
            { bad "$what: row $i rel L2 ${rel:-?} > $bound"; return; }
        w=$(fmax "$w" "$rel")
        i=$((i + 1))
    done
    good "$what: ids $cpu_ids identical, $((last + 1)) rows within $bound (HF bf16 vs fp32; worst $w) [CPU $cpu_took s]"
}

if [ "$QUICK" = 1 ]; then
    say "gpu-check: real shapes skipped (MPK_GPU_QUICK=1)"
elif ! command -v python3 >/dev/null 2>&1; then
    bad "real shapes: no python3"
else
    missing=""
    for p in $PRESETS; do
        ref_ok "$REF_DIR/$p" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        say "gpu-check: making HF references for$missing in $REF_DIR (CUDA; the 8B one takes ~100 s and 16 GB)"
        mkdir -p "$REF_DIR"
        # shellcheck disable=SC2086
        runc hf-reference 900 env PYTHONUNBUFFERED=1 python3 tools/hf_reference.py \
            --preset $missing --out "$REF_DIR" --steps 32 --all-logits --device cuda
        indent "$out" 20
        if [ "$rc" -ne 0 ]; then
            badcmd "real shapes: tools/hf_reference.py failed"
        fi
        say "gpu-check: HF references took $took s ($(elapsed) s so far)"
    fi
    # the yardstick: HF's own bf16 inference on the same tokens
    nobf=""
    for p in $PRESETS; do
        [ -s "$REF_DIR/$p/bf16_logits.f32" ] || nobf="$nobf $REF_DIR/$p"
    done
    if [ -n "$nobf" ]; then
        # shellcheck disable=SC2086
        runc hf-bf16 600 env PYTHONUNBUFFERED=1 python3 tools/hf_bf16_logits.py $nobf
        indent "$out" 10
        [ "$rc" -eq 0 ] || badcmd "real shapes: tools/hf_bf16_logits.py failed"
        say "gpu-check: HF bf16 runs took $took s ($(elapsed) s so far)"
    fi
    for p in $PRESETS; do
        d=$REF_DIR/$p
        if ! ref_ok "$d"; then
            bad "real $p: no complete reference in $d (config.json, model.safetensors, reference.json, prompt.ids, generated.ids, all_logits.f32)"
            continue
        fi
        runc "import-$p" 60 "$mpk" import "$d/config.json" -o "$work/$p.mpk"
        if [ "$rc" -ne 0 ]; then
            badcmd "real $p: mpk import"
            continue
        fi
        runc "build-$p" 300 "$mpk" build "$work/$p.mpk" -o "$work/$p.mpkb"
        if [ "$rc" -ne 0 ]; then
            badcmd "real $p: mpk build"
            continue
        fi
        ref_info "$d" "$work/$p.mpk"
        say "gpu-check: real $p: built in $took s: $("$mpk" dump "$work/$p.mpkb" 2>/dev/null | head -n 1 | sed 's/^blob [^:]*: //')"
        case $p in
        *8b*)
            real_chunk "$p"
            real_chunk "$p" auto
            real_run "$p" dynamic
            if [ $(($(elapsed) + took)) -lt "$BUDGET" ]; then
                real_run "$p" static
            else
                say "gpu-check: real $p schedule=static skipped: $(elapsed) s spent, the run takes ~$took s, budget $BUDGET s"
            fi
            ;;
        *)
            real_run "$p" static
            real_run "$p" dynamic
            real_chunk "$p"
            real_cpu "$p"
            real_cpu "$p" -c64
            real_chunk "$p" auto
            real_cpu "$p" -c64-sauto
            ;;
        esac
        say "gpu-check: real $p done ($(elapsed) s so far)"
    done
fi

say "gpu-check: $pass passed, $fail failed, in $(elapsed) s"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]
