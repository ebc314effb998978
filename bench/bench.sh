#!/usr/bin/env bash
# bench.sh - make bench: mpk's GPU decode time per token next to the
# bandwidth limit and the PyTorch peers, batch 1, all in one run.
#
#   bash bench/bench.sh bin/mpk bin/mpk-run        (from the repository root)
#
# For each model of BENCH_MODELS (tools/hf_reference.py presets):
#   1. weights: MPK_REF_DIR/MODEL/{config.json,model.safetensors}, made with
#      tools/hf_reference.py (random bf16 weights of the real shapes) if missing;
#   2. mpk import + mpk build --stats (bytes per token), then mpk-run on the
#      GPU with --schedule dynamic and --schedule static: BENCH_CTX prompt
#      ids, BENCH_TOKENS generated, the median time per token from --stats;
#   3. the PyTorch peers (bench/peers.py): HF eager and PyTorch + CUDA graph;
#   4. the limit: bytes per token at BENCH_CTX over the streaming-read
#      bandwidth that bench/bw.cu measures on this GPU.
# The table (markdown) is the last thing printed; it and the notes go to
# BENCH_OUT/results.md, every command's output to BENCH_OUT/. bench/README.md
# says what each column means.
#
# Environment (defaults in brackets):
#   MPK_REF_DIR    weights directory [/tmp/mpk-ref]
#   BENCH_OUT      logs and results [build/bench]
#   BENCH_MODELS   [qwen3-0.6b-shape llama-3.2-1b-shape qwen3-8b-shape]
#   BENCH_CTX      prompt tokens, the context the decode steps run at [512]
#   BENCH_TOKENS   tokens generated and timed [64]
#   BENCH_CHUNK    mpk build --chunk: prompt tokens per chunk step, the
#                  time to first token's; 0: a token a step [64]
#   BENCH_RUN_TIMEOUT    seconds for one mpk-run [90]
#   BENCH_PEERS_TIMEOUT  seconds for all the peers together [300]
#   PYTHON [python3], NVCC [/usr/local/cuda/bin/nvcc, else nvcc],
#   PEERS_FLAGS    extra flags for bench/peers.py (--device cpu: a dry run)
#
# Exit status: 0; 1 when mpk (import, build or run) failed for some model,
# a model's weights could not be made, or the bandwidth probe failed (the
# table says FAIL there and the run goes on); 2 on usage errors. A peer that
# fails is shown as FAIL in the table and explained in the notes, without
# changing the exit status.

set -u
export LC_ALL=C

usage() {
    echo "usage: bash bench/bench.sh MPK MPK_RUN   (from the repository root)" >&2
    exit 2
}
[ $# -eq 2 ] || usage

abspath() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
    esac
}

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 2
MPK=$(abspath "$1")
MPK_RUN=$(abspath "$2")
for b in "$MPK" "$MPK_RUN"; do
    if [ ! -x "$b" ]; then
        echo "bench: error: '$b' is not an executable; build it first" >&2
        exit 2
    fi
done
REF=$(abspath "${MPK_REF_DIR:-/tmp/mpk-ref}")
OUT=$(abspath "${BENCH_OUT:-build/bench}")
MODELS=${BENCH_MODELS:-qwen3-0.6b-shape llama-3.2-1b-shape qwen3-8b-shape}
CTX=${BENCH_CTX:-512}
TOKENS=${BENCH_TOKENS:-64}
CHUNK=${BENCH_CHUNK:-64}
CHUNK_FLAGS=
if [ "$CHUNK" != 0 ]; then CHUNK_FLAGS="--chunk $CHUNK"; fi
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-90}
PEERS_TIMEOUT=${BENCH_PEERS_TIMEOUT:-300}
PYTHON=${PYTHON:-python3}
if [ -z "${NVCC:-}" ]; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; else NVCC=nvcc; fi
fi
read -r -a PEERS_EXTRA <<<"${PEERS_FLAGS:-}"
COMPARE=8 # leading greedy tokens compared with HF eager's

isint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for v in CTX TOKENS RUN_TIMEOUT PEERS_TIMEOUT; do
    if ! isint "${!v}" || [ "${!v}" -lt 1 ]; then
        echo "bench: error: $v must be a positive integer, not '${!v}'" >&2
        exit 2
    fi
done
[ -n "$MODELS" ] || { echo "bench: error: BENCH_MODELS is empty" >&2; exit 2; }
mkdir -p "$OUT" || exit 2
cd "$ROOT" || exit 2

say() { printf 'bench: %s\n' "$*"; }
now_ms() { date +%s%3N; }
T_START=$(now_ms)
PHASES=$OUT/phases.txt
: >"$PHASES"
phase_t0=0
phase_begin() {
    phase_name=$1
    phase_t0=$(now_ms)
    say "$phase_name ..."
}
phase_end() {
    local t
    t=$(awk -v a="$phase_t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    printf '%s\t%s\n' "$phase_name" "$t" >>"$PHASES"
    say "$phase_name: ${t} s${1:+ ($1)}"
}
# kv FILE KEY: the value of the last KEY=... line of FILE (empty if none).
kv() { sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n 1; }
# fmt FORMAT NUMBER: printf through awk; empty stays empty.
fmt() { [ -n "$2" ] && awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; }

FAILED=0
fail() {
    FAILED=1
    say "FAIL: $*"
    printf '%s\n' "$*" >>"$OUT/failures.txt"
}
: >"$OUT/failures.txt"

# ---------------------------------------------------------------- machine
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "$GPU" ] || GPU="unknown (nvidia-smi failed)"
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || COMMIT=""
if [ -z "$COMMIT" ]; then
    COMMIT="unknown (no git)"
elif ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
    COMMIT="$COMMIT (+ uncommitted changes)"
fi
say "$DATE, $GPU, commit $COMMIT, context $CTX, $TOKENS tokens, models: $MODELS"

# ---------------------------------------------------------------- bandwidth
phase_begin "bandwidth probe (bench/bw.cu)"
case $CC in
90) GENCODE=arch=compute_90a,code=sm_90a ;;
[1-9][0-9] | [1-9][0-9][0-9]) GENCODE=arch=compute_$CC,code=sm_$CC ;;
*) GENCODE=arch=compute_90a,code=sm_90a ;;
esac
READ_GBPS="" COPY_GBPS="" READ_CFG=""
if ! "$NVCC" -O3 -gencode "$GENCODE" -o "$OUT/bw" bench/bw.cu >"$OUT/bw-build.log" 2>&1; then
    fail "bandwidth probe: nvcc failed (see $OUT/bw-build.log)"
elif ! timeout -k 10 120 "$OUT/bw" >"$OUT/bw.log" 2>&1; then
    fail "bandwidth probe: bw failed (see $OUT/bw.log)"
else
    READ_GBPS=$(kv "$OUT/bw.log" read_GBps)
    COPY_GBPS=$(kv "$OUT/bw.log" copy_GBps)
    READ_CFG=$(kv "$OUT/bw.log" read_config)
    [ -n "$READ_GBPS" ] || fail "bandwidth probe: no read_GBps line in $OUT/bw.log"
fi
phase_end "read ${READ_GBPS:-?} GB/s, copy ${COPY_GBPS:-?} GB/s"

# ---------------------------------------------------------------- weights
missing=()
for m in $MODELS; do
    [ -s "$REF/$m/model.safetensors" ] && [ -s "$REF/$m/config.json" ] || missing+=("$m")
done
if [ ${#missing[@]} -gt 0 ]; then
    phase_begin "weights for ${missing[*]} (tools/hf_reference.py into $REF)"
    # Only presets hf_reference.py knows (one unknown name would stop it
    # making any); --list needs no torch.
    known=$("$PYTHON" tools/hf_reference.py --list 2>/dev/null | awk '{ print $1 }')
    todo=()
    for m in "${missing[@]}"; do
        if printf '%s\n' "$known" | grep -qxF -- "$m"; then
            todo+=("$m")
        else
            say "$m: no weights in $REF/$m, and tools/hf_reference.py has no such preset"
        fi
    done
    : >"$OUT/weights.log"
    # Only the weights matter here: a short bf16 reference run with the
    # first prompt (the *-shape presets skip the reload check by default).
    if [ ${#todo[@]} -gt 0 ]; then
        "$PYTHON" tools/hf_reference.py --out "$REF" --preset "${todo[@]}" \
            --steps 8 --min-margin 0 --prompt-tries 1 --dtype-compute bfloat16 \
            >"$OUT/weights.log" 2>&1 || say "tools/hf_reference.py failed (see $OUT/weights.log)"
    fi
    phase_end
fi

# ---------------------------------------------------------------- mpk
# run_mpk MODEL SCHEDULE: one mpk-run; writes run-SCHEDULE.{out,err} and
# SCHEDULE_* lines into mpk.env.
run_mpk() {
    local m=$1 s=$2 o=$OUT/$1 rc line ms ntok t0 t
    t0=$(now_ms)
    timeout -k 10 "$RUN_TIMEOUT" "$MPK_RUN" "$o/$m.mpkb" --weights "$REF/$m" \
        --prompt-ids "$IDS" -n "$TOKENS" --stats --schedule "$s" "${RUN_EXTRA[@]}" \
        >"$o/run-$s.out" 2>"$o/run-$s.err"
    rc=$?
    t=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    line=$(grep '^mpk-run: gpu: ' "$o/run-$s.err" | tail -n 1)
    ms=$(printf '%s\n' "$line" | sed -n 's/.*median per token \([0-9][0-9.]*\) ms.*/\1/p')
    ntok=$(head -n 1 "$o/run-$s.out" | wc -w)
    {
        echo "${s}_rc=$rc"
        echo "${s}_s=$t"
        echo "${s}_ntok=$ntok"
        echo "${s}_tokens=$(head -n 1 "$o/run-$s.out" | tr -s ' \t' ' ' | sed 's/^ //; s/ $//')"
        echo "${s}_steps=$(printf '%s\n' "$line" | sed -n 's/^mpk-run: gpu: \([0-9][0-9]*\) steps.*/\1/p')"
        echo "${s}_sched=$(printf '%s\n' "$line" | sed -n 's/.*(\([a-z]*\) schedule[,)].*/\1/p')"
        echo "${s}_workers=$(printf '%s\n' "$line" | sed -n 's/.*schedule, \([0-9][0-9]*\) workers).*/\1/p')"
        echo "${s}_ttft=$(printf '%s\n' "$line" | sed -n 's/.*time to first token \([0-9][0-9.]*\) ms.*/\1/p')"
        echo "${s}_tps=$(printf '%s\n' "$line" | sed -n 's/.* \([0-9][0-9.]*\) tokens\/s.*/\1/p')"
        echo "${s}_mean=$(printf '%s\n' "$line" | sed -n 's/.*mean per token \([0-9][0-9.]*\) ms.*/\1/p')"
        echo "${s}_p99=$(printf '%s\n' "$line" | sed -n 's/.*p99 per token \([0-9][0-9.]*\) ms.*/\1/p')"
        grep 'MiB of weights in' "$o/run-$s.err" | tail -n 1 |
            sed -n "s/.* \([0-9][0-9.]*\) MiB of weights in \([0-9][0-9.]*\) ms.*(\([0-9][0-9.]*\) GB\/s).*/${s}_load_mib=\1\n${s}_load_ms=\2\n${s}_load_gbps=\3/p"
    } >>"$o/mpk.env"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "${s}_error=timed out after ${RUN_TIMEOUT} s" >>"$o/mpk.env"
        fail "$m: mpk-run --schedule $s timed out after $RUN_TIMEOUT s (see $o/run-$s.err)"
    elif [ $rc -ne 0 ]; then
        echo "${s}_error=exit status $rc: $(grep -v '^mpk-run: \(gpu\|loaded\)' "$o/run-$s.err" | tail -n 1 | tr '|' '/' | cut -c1-200)" >>"$o/mpk.env"
        fail "$m: mpk-run --schedule $s exited with status $rc (see $o/run-$s.err)"
    elif [ -z "$ms" ] && [ "$ntok" -le 1 ]; then
        echo "${s}_error=only $ntok token generated (an end-of-sequence id?): no time per token" >>"$o/mpk.env"
        fail "$m: mpk-run --schedule $s generated $ntok token: no time per token (see $o/run-$s.out)"
    elif [ -z "$ms" ]; then
        echo "${s}_error=no 'median per token' in its --stats output" >>"$o/mpk.env"
        fail "$m: mpk-run --schedule $s printed no 'mpk-run: gpu: ... median per token M ms' line (see $o/run-$s.err)"
    else
        echo "${s}_ms=$ms" >>"$o/mpk.env"
        say "$m: mpk-run --schedule $s: median $ms ms/token, $ntok tokens, ${t} s"
    fi
}

# Greedy, whatever a generation_config.json beside the weights says: the
# tokens are compared with HF's greedy ones.
RUN_EXTRA=(--temperature 0)
# An mpk-run that can ignore end-of-sequence ids always times BENCH_TOKENS.
if "$MPK_RUN" --help 2>&1 | grep -q -- '--ignore-eos'; then
    RUN_EXTRA+=(--ignore-eos)
fi

bench_mpk() {
    local m=$1 o=$OUT/$1 line bpt vocab max_seq need mod wb ab kb
    mkdir -p "$o"
    : >"$o/mpk.env"
    if [ ! -s "$REF/$m/model.safetensors" ] || [ ! -s "$REF/$m/config.json" ]; then
        echo "build_error=no weights in $REF/$m" >>"$o/mpk.env"
        fail "$m: no $REF/$m/model.safetensors (see $OUT/weights.log)"
        return
    fi
    if ! "$MPK" import "$REF/$m/config.json" -o "$o/$m.mpk" >"$o/build.log" 2>&1 ||
        ! "$MPK" build --stats $CHUNK_FLAGS "$o/$m.mpk" -o "$o/$m.mpkb" >>"$o/build.log" 2>&1; then
        echo "build_error=mpk import or build failed" >>"$o/mpk.env"
        fail "$m: mpk import or mpk build failed (see $o/build.log)"
        return
    fi
    "$MPK" dump "$o/$m.mpkb" >"$o/dump.txt" 2>&1
    line=$(sed -n 2p "$o/dump.txt")
    vocab=$(printf '%s\n' "$line" | sed -n 's/.* vocab \([0-9][0-9]*\).*/\1/p')
    max_seq=$(printf '%s\n' "$line" | sed -n 's/.* max_seq \([0-9][0-9]*\).*/\1/p')
    need=$((CTX + TOKENS))
    if ! isint "$vocab" || ! isint "$max_seq"; then
        echo "build_error=no vocab/max_seq on line 2 of mpk dump" >>"$o/mpk.env"
        fail "$m: line 2 of 'mpk dump' is not 'model ... vocab V max_seq S' (see $o/dump.txt)"
        return
    fi
    if [ "$max_seq" -lt "$need" ]; then
        say "$m: the blob's max_seq $max_seq < $CTX + $TOKENS; rebuilding with -D max_seq=$need"
        if ! "$MPK" build --stats $CHUNK_FLAGS -D "max_seq=$need" "$o/$m.mpk" -o "$o/$m.mpkb" >>"$o/build.log" 2>&1; then
            echo "build_error=mpk build -D max_seq=$need failed" >>"$o/mpk.env"
            fail "$m: mpk build -D max_seq=$need failed (see $o/build.log)"
            return
        fi
        "$MPK" dump "$o/$m.mpkb" >"$o/dump.txt" 2>&1
        max_seq=$(sed -n 2p "$o/dump.txt" | sed -n 's/.* max_seq \([0-9][0-9]*\).*/\1/p')
    fi
    # "bytes per token  N (X MiB): weights W, activations A, plus K of KV
    # cache per position of context"
    bpt=$(grep 'bytes per token' "$o/build.log" | grep -v 'chunk graph' | tail -n 1 |
        sed -n 's/.*weights \([0-9][0-9]*\), activations \([0-9][0-9]*\), plus \([0-9][0-9]*\) of KV cache per position.*/\1 \2 \3/p')
    if [ -z "$bpt" ]; then
        echo "build_error=no 'bytes per token' line from mpk build --stats" >>"$o/mpk.env"
        fail "$m: no parsable 'bytes per token' line in $o/build.log"
        return
    fi
    read -r wb ab kb <<<"$bpt"
    {
        echo "weights_bytes=$wb"
        echo "act_bytes=$ab"
        echo "kv_bytes_per_pos=$kb"
        echo "bytes_at_ctx=$(awk -v w="$wb" -v a="$ab" -v k="$kb" -v c="$CTX" 'BEGIN { printf "%.0f", w + a + k * c }')"
        echo "vocab=$vocab"
        echo "max_seq=$max_seq"
        echo "blob_bytes=$(wc -c <"$o/$m.mpkb")"
    } >>"$o/mpk.env"
    # The prompt: i % min(1000, vocab-1) + 1 (bench/peers.py uses the same).
    mod=$((vocab - 1 < 1000 ? vocab - 1 : 1000))
    IDS=$(awk -v n="$CTX" -v m="$mod" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", i % m + 1 }')
    run_mpk "$m" dynamic
    run_mpk "$m" static
}

for m in $MODELS; do
    phase_begin "mpk: $m"
    bench_mpk "$m"
    phase_end
done

# ---------------------------------------------------------------- peers
peer_args=()
for m in $MODELS; do
    rm -f "$OUT/$m/peers.env" "$OUT/$m/peers.json"
    [ -s "$REF/$m/model.safetensors" ] && peer_args+=(--model "$m" "$REF/$m")
done
if [ ${#peer_args[@]} -gt 0 ]; then
    phase_begin "PyTorch peers (bench/peers.py)"
    timeout -k 10 "$PEERS_TIMEOUT" "$PYTHON" bench/peers.py --ctx "$CTX" --tokens "$TOKENS" \
        --compare "$COMPARE" --out-dir "$OUT" "${PEERS_EXTRA[@]}" "${peer_args[@]}" >"$OUT/peers.log" 2>&1
    rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && say "bench/peers.py timed out after $PEERS_TIMEOUT s"
    grep -E '^peers: [^ ]+: (eager|graph|loaded|warning|done)' "$OUT/peers.log" | sed 's/^/bench: /'
    phase_end "exit status $rc, log $OUT/peers.log"
fi

# ---------------------------------------------------------------- table
# agree "A B C" "A B D" N: how many of the first N tokens are equal.
agree() {
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {
        na = split(a, x, " "); nb = split(b, y, " ")
        if (na < n) n = na
        if (nb < n) n = nb
        k = 0
        while (k < n && x[k + 1] == y[k + 1]) k++
        printf "%d/%d", k, n }'
}

ROWS=$OUT/rows.md NOTES=$OUT/notes.md TTFT_ROWS=$OUT/ttft-rows.md
: >"$ROWS"
: >"$TTFT_ROWS"
: >"$NOTES"
note() { printf '%s\n' "$*" >>"$NOTES"; }
TORCHV="" TFV=""
for m in $MODELS; do
    e=$OUT/$m/mpk.env p=$OUT/$m/peers.env
    bytes=$(kv "$e" bytes_at_ctx)
    gb=$(fmt '%.3f GB' "$(awk -v b="$bytes" 'BEGIN { if (b != "") print b / 1e9 }')")
    limit="" limit_raw=""
    if [ -n "$bytes" ] && [ -n "$READ_GBPS" ]; then
        limit_raw=$(awk -v b="$bytes" -v r="$READ_GBPS" 'BEGIN { printf "%.9g", b / (r * 1e9) * 1e3 }')
        limit=$(fmt '%.3f' "$limit_raw")
    fi
    cells=() best=""
    for s in dynamic static; do
        ms=$(kv "$e" "${s}_ms") ntok=$(kv "$e" "${s}_ntok")
        if [ -n "$ms" ]; then
            c=$(fmt '%.3f' "$ms")
            [ "${ntok:-0}" -lt 16 ] && c="$c ($ntok tok)"
            cells+=("$c")
            best=$(awk -v a="$best" -v b="$ms" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')
        else
            cells+=("FAIL")
        fi
    done
    for peer in graph eager; do
        if [ "$(kv "$p" "${peer}_ok")" = 1 ]; then
            cells+=("$(fmt '%.3f' "$(kv "$p" "${peer}_ms")")")
        else
            cells+=("FAIL")
        fi
    done
    ratio="—"
    [ -n "$best" ] && [ -n "$limit_raw" ] && ratio=$(awk -v a="$best" -v l="$limit_raw" 'BEGIN { printf "%.2f×", a / l }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$m" "${gb:-FAIL}" "${limit:-FAIL}" \
        "${cells[0]}" "${cells[1]}" "${cells[2]}" "${cells[3]}" "$ratio" >>"$ROWS"
    # time to the first token of the CTX-token prompt
    tt=()
    for s in dynamic static; do
        v=$(kv "$e" "${s}_ttft")
        tt+=("${v:-FAIL}")
    done
    pf=FAIL
    [ "$(kv "$p" prefill_ok)" = 1 ] && pf=$(fmt '%.1f' "$(kv "$p" prefill_ms)")
    ef=FAIL
    [ "$(kv "$p" eager_ok)" = 1 ] && ef=$(kv "$p" eager_prefill_ms)
    printf '| %s | %s | %s | %s | %s |\n' "$m" "${tt[0]}" "${tt[1]}" "$pf" "$ef" >>"$TTFT_ROWS"

    # Notes for this model.
    err=$(kv "$e" build_error)
    [ -n "$err" ] && note "- $m: mpk: $err."
    [ -n "$bytes" ] && note "- $m: bytes per token at context $CTX: weights $(kv "$e" weights_bytes) + activations $(kv "$e" act_bytes) + $CTX × $(kv "$e" kv_bytes_per_pos) of KV cache = $bytes; blob $(kv "$e" blob_bytes) bytes, max_seq $(kv "$e" max_seq)."
    eager_tokens=$(kv "$p" eager_tokens)
    for s in dynamic static; do
        [ -n "$(kv "$e" "${s}_rc")" ] || continue
        err=$(kv "$e" "${s}_error")
        if [ -n "$err" ]; then
            note "- $m: mpk $s: FAIL: $err (log: $OUT/$m/run-$s.err)."
            continue
        fi
        ntok=$(kv "$e" "${s}_ntok")
        txt="- $m: mpk $s: $ntok tokens generated"
        [ "$ntok" -lt "$TOKENS" ] && txt="$txt (stopped at an end-of-sequence id before $TOKENS)"
        txt="$txt, $(kv "$e" "${s}_steps") steps"
        [ -n "$(kv "$e" "${s}_workers")" ] && txt="$txt, $(kv "$e" "${s}_workers") workers"
        txt="$txt, time to first token $(kv "$e" "${s}_ttft") ms"
        [ -n "$(kv "$e" "${s}_mean")" ] && txt="$txt, per token mean $(kv "$e" "${s}_mean") ms, median $(kv "$e" "${s}_ms") ms, p99 $(kv "$e" "${s}_p99") ms"
        txt="$txt, $(kv "$e" "${s}_tps") tokens/s"
        [ -n "$(kv "$e" "${s}_load_mib")" ] && txt="$txt; loaded $(kv "$e" "${s}_load_mib") MiB of weights in $(kv "$e" "${s}_load_ms") ms ($(kv "$e" "${s}_load_gbps") GB/s)"
        [ -n "$eager_tokens" ] && txt="$txt; first tokens equal to HF eager's: $(agree "$(kv "$e" "${s}_tokens")" "$eager_tokens" "$COMPARE")"
        sched=$(kv "$e" "${s}_sched")
        [ -n "$sched" ] && [ "$sched" != "$s" ] && txt="$txt; WARNING: its stats line says '$sched schedule'"
        note "$txt; whole run $(kv "$e" "${s}_s") s."
    done
    if [ -s "$p" ]; then
        TORCHV=$(kv "$p" torch) TFV=$(kv "$p" transformers)
        [ -n "$(kv "$p" load_s)" ] && note "- $m: peers: loaded in $(kv "$p" load_s) s."
        if [ "$(kv "$p" graph_ok)" = 1 ]; then
            txt="- $m: PyTorch + CUDA graph: replay median $(kv "$p" graph_ms) ms (min $(kv "$p" graph_min_ms), max $(kv "$p" graph_max_ms)), $(kv "$p" graph_wall_ms) ms per token of wall clock with the host loop"
            [ "$(kv "$p" graph_captured)" = 1 ] || txt="$txt, NOT CAPTURED (a dry run without CUDA graphs)"
            note "$txt; first tokens equal to HF eager's: $(kv "$p" agree)/$(kv "$p" compare)."
        else
            note "- $m: PyTorch + CUDA graph: FAIL: $(kv "$p" graph_error) (log: $OUT/peers.log)."
        fi
        if [ "$(kv "$p" eager_ok)" = 1 ]; then
            note "- $m: HF eager: median $(kv "$p" eager_ms) ms (min $(kv "$p" eager_min_ms), max $(kv "$p" eager_max_ms)), prefill of $CTX tokens $(kv "$p" eager_prefill_ms) ms."
        else
            note "- $m: HF eager: FAIL: $(kv "$p" eager_error) (log: $OUT/peers.log)."
        fi
    elif [ -s "$REF/$m/model.safetensors" ]; then
        note "- $m: peers: no results (bench/peers.py crashed or timed out: see $OUT/peers.log)."
    fi
done

T_TOTAL=$(awk -v a="$T_START" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
HEADER=$OUT/header.md
{
    echo "# make bench: $DATE"
    echo
    echo "GPU: $GPU; commit $COMMIT; batch 1, context $CTX, $TOKENS tokens timed."
    echo "Bandwidth (bench/bw.cu): streaming read ${READ_GBPS:-FAIL} GB/s (threads × unroll × blocks ${READ_CFG:-?}), device-to-device copy ${COPY_GBPS:-FAIL} GB/s (read + write)."
    echo "Peers: torch ${TORCHV:-?}, transformers ${TFV:-?}. Whole run ${T_TOTAL} s."
} >"$HEADER"
TABLE=$OUT/table.md
{
    echo "| model | bytes/token at ctx $CTX | limit ms | mpk dynamic ms | mpk static ms | PyTorch+CUDA graph ms | HF eager ms | mpk / limit |"
    echo "|---|---|---|---|---|---|---|---|"
    cat "$ROWS"
    echo
    echo "Time to first token, a $CTX-token prompt (mpk: --chunk ${CHUNK}; 0 is one token a step), ms:"
    echo
    echo "| model | mpk dynamic | mpk static | PyTorch prefill (sdpa, median of 5) | HF eager prefill (one pass) |"
    echo "|---|---|---|---|---|"
    cat "$TTFT_ROWS"
} >"$TABLE"
{
    cat "$HEADER"
    echo
    cat "$TABLE"
    echo
    echo "Notes:"
    echo
    cat "$NOTES"
    echo
    echo "Phases (seconds):"
    echo
    awk -F '\t' '{ printf "- %s: %s\n", $1, $2 }' "$PHASES"
    if [ -s "$OUT/failures.txt" ]; then
        echo
        echo "Failures:"
        echo
        sed 's/^/- /' "$OUT/failures.txt"
    fi
} >"$OUT/results.md"

# Stdout: header, notes, failures, then the table last.
echo
cat "$HEADER"
echo
cat "$NOTES"
if [ -s "$OUT/failures.txt" ]; then
    echo
    sed 's/^/FAIL: /' "$OUT/failures.txt"
fi
echo
echo "Full logs and results.md in $OUT."
echo
cat "$TABLE"
exit $FAILED
