#!/usr/bin/env python3
"""PyTorch peers for make bench: batch-1 greedy decode time per token.

    python3 bench/peers.py --ctx 512 --tokens 64 --out-dir build/bench \\
        --model qwen3-8b-shape /tmp/mpk-ref/qwen3-8b-shape [--model NAME DIR ...]

Each DIR holds config.json and model.safetensors (tools/hf_reference.py
writes them). The model is loaded once per DIR with
AutoModelForCausalLM.from_pretrained in bfloat16 (onto the CPU and then moved
to the GPU; straight onto the GPU with device_map when the accelerate package
is there, which transformers 5 needs for that), and timed two ways on the same prompt as mpk's (ids i % min(1000, vocab-1) + 1,
i = 0..ctx-1):

  eager  "HF eager": transformers as it comes, in PyTorch eager mode, with
         attn_implementation="eager" (the reference implementation, the one
         tools/hf_reference.py runs) and the default DynamicCache. The ctx
         prompt tokens in one forward pass, then per token
         model(input_ids=tok, past_key_values=cache, use_cache=True) and the
         argmax, between two torch.cuda.synchronize(); wall clock. The
         median over --tokens steps.
  graph  "PyTorch + CUDA graph": the same model switched to
         attn_implementation="sdpa", a transformers StaticCache of
         ctx + tokens + 16 positions, the prompt in one pass outside the
         graph, then one decode step (forward + argmax) captured in a
         torch.cuda.CUDAGraph after warm-up runs on a side stream. The input
         id and position_ids are static tensors updated in place (on the
         device, no host sync) before each replay; the argmax of one replay
         is the next replay's input. Each replay is timed with CUDA events;
         the median over --tokens replays. (In transformers 5.x the static
         cache keeps its write position in a device tensor that each replay
         advances; it is reset to ctx after the warm-up, and checked to be
         ctx + tokens at the end.)

  prefill "PyTorch prefill": the time to the first token with sdpa, bf16:
         one forward pass over the ctx prompt tokens with a fresh
         DynamicCache and logits of the last position only, then the
         argmax, between two torch.cuda.synchronize(); one warm-up pass,
         then the median of 5 (what mpk's time to first token is set
         against).

Both decode peers run greedy for exactly --tokens steps (no stop at end-of-sequence). Their
first --compare tokens (the prefill's argmax and the steps after it) are
compared: a difference is a warning, not an error (different attention
kernels in bf16 may flip a near-tie on random weights).

For each NAME it writes OUT/NAME/peers.json (everything) and OUT/NAME/peers.env
(key=value lines that bench.sh reads: eager_ms, graph_ms, ..._error, ..._tokens,
...). A peer that fails gets ok=0 and a one-line error; the others still run.
Exit status: 0 when every peer of every model ran, 1 when some failed, 2 on
usage errors. --device cpu runs the same code without CUDA graphs (the graph
peer then calls the static-cache step directly): a dry run for machines
without a GPU, not a benchmark.
"""

import argparse
import gc
import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def log(msg):
    print("peers: " + msg, file=sys.stderr, flush=True)


def one_line(e):
    s = "%s: %s" % (type(e).__name__, e)
    s = " ".join(s.split())
    return s.replace("|", "/")[:300]


def prompt_ids(ctx, vocab):
    """The prompt bench.sh gives mpk-run: i % min(1000, vocab-1) + 1."""
    m = min(1000, vocab - 1)
    return [i % m + 1 for i in range(ctx)]


def cache_kwarg(model):
    """transformers <= 5.2x calls the KV cache argument past_key_values,
    newer ones cache (see tools/hf_reference.py)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    return "cache" if "cache" in params else "past_key_values"


def out_cache(out, name):
    c = getattr(out, name, None)
    if c is None and name != "past_key_values":
        c = getattr(out, "past_key_values", None)
    return c


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_model(torch, transformers, d, device):
    kw = dict(attn_implementation="sdpa")
    try:
        sig = inspect.signature(transformers.PreTrainedModel.from_pretrained).parameters
    except (TypeError, ValueError):
        sig = {}
    # transformers 5 spells it dtype (torch_dtype still works, with a warning).
    kw["dtype" if "dtype" in sig or "torch_dtype" not in sig else "torch_dtype"] = torch.bfloat16
    cls = transformers.AutoModelForCausalLM
    model = None
    # device_map loads straight onto the GPU, but transformers 5 wants the
    # accelerate package for it; without it, load on the CPU and move.
    if device != "cpu" and importlib.util.find_spec("accelerate") is not None:
        try:
            model = cls.from_pretrained(d, device_map=device, **kw)
        except (ImportError, ValueError, TypeError) as e:
            log("from_pretrained(device_map=%r) failed (%s); loading on the CPU and moving"
                % (device, one_line(e)))
    if model is None:
        model = cls.from_pretrained(d, **kw).to(device)
    model.eval()
    bad = {str(p.dtype) for p in model.parameters() if p.dtype != torch.bfloat16}
    devs = {str(p.device) for p in model.parameters()}
    if bad:
        raise RuntimeError("parameters in %s, not bfloat16" % sorted(bad))
    if any(not x.startswith(device) for x in devs):
        raise RuntimeError("parameters on %s, not %s" % (sorted(devs), device))
    return model


def set_attn(model, impl):
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:
        model.config._attn_implementation = impl
    got = getattr(model.config, "_attn_implementation", None)
    if got != impl:
        raise RuntimeError("attention implementation is %r after asking for %r" % (got, impl))


def summary(times_ms):
    return {"median_ms": statistics.median(times_ms), "min_ms": min(times_ms),
            "max_ms": max(times_ms), "steps": len(times_ms)}


def run_eager(torch, model, prompt, tokens, device):
    set_attn(model, "eager")
    cname = cache_kwarg(model)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    times, gen = [], []
    with torch.inference_mode():
        sync(torch, device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past = out_cache(out, cname)
        tok = out.logits[:, -1, :].argmax(-1, keepdim=True)
        sync(torch, device)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        if past is None:
            raise RuntimeError("the model returned no KV cache")
        gen.append(int(tok))
        del out
        for _ in range(tokens):
            sync(torch, device)
            t0 = time.perf_counter()
            out = model(input_ids=tok, use_cache=True, **{cname: past})
            past = out_cache(out, cname)
            tok = out.logits[:, -1, :].argmax(-1, keepdim=True)
            sync(torch, device)
            times.append((time.perf_counter() - t0) * 1e3)
            gen.append(int(tok))
            del out
        seen = past.get_seq_length() if hasattr(past, "get_seq_length") else None
        if seen is not None and int(seen) != len(prompt) + tokens:
            raise RuntimeError("KV cache holds %d positions after %d fed" % (int(seen), len(prompt) + tokens))
    del past
    r = summary(times)
    r.update(attn="eager", cache="DynamicCache", prefill_ms=prefill_ms, tokens=gen)
    return r


def run_prefill(torch, model, prompt, device, runs=5):
    set_attn(model, "sdpa")
    cname = cache_kwarg(model)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    times, first = [], None
    with torch.inference_mode():
        for i in range(runs + 1):
            sync(torch, device)
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            tok = int(out.logits[:, -1, :].argmax(-1))
            sync(torch, device)
            if i > 0:  # the first is the warm-up
                times.append((time.perf_counter() - t0) * 1e3)
            first = tok if first is None else first
            if tok != first:
                raise RuntimeError("prefill %d gave token %d, the first gave %d" % (i, tok, first))
            del out
    r = summary(times)
    r.update(attn="sdpa", prefill_ms=r["median_ms"], tokens=[first], cache=cname)
    return r


def static_layers(cache):
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(l, "cumulative_length") for l in layers):
        raise RuntimeError("this transformers' StaticCache has no per-layer cumulative_length; "
                           "the graph peer knows only the 5.x cache layout")
    return layers


def run_graph(torch, transformers, model, prompt, tokens, device, warmup=3):
    set_attn(model, "sdpa")
    cname = cache_kwarg(model)
    ctx = len(prompt)
    use_graph = device.startswith("cuda")
    max_len = ctx + tokens + 16
    sc = transformers.StaticCache
    params = inspect.signature(sc.__init__).parameters
    kw = dict(config=model.config, max_cache_len=max_len)
    # transformers 4.x also wanted batch size, device and dtype up front.
    for k, v in (("max_batch_size", 1), ("batch_size", 1), ("device", device),
                 ("dtype", torch.bfloat16)):
        if k in params:
            kw[k] = v
    cache = sc(**kw)
    captured = False
    with torch.inference_mode():
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        pos = torch.arange(ctx, dtype=torch.long, device=device).unsqueeze(0)
        sync(torch, device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=1, **{cname: cache})
        first = out.logits[:, -1, :].argmax(-1, keepdim=True)  # [1, 1]
        sync(torch, device)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        del out, ids, pos
        layers = static_layers(cache)
        if any(int(l.cumulative_length) != ctx for l in layers):
            raise RuntimeError("static cache length %d after a prefill of %d"
                               % (int(layers[0].cumulative_length), ctx))

        static_ids = first.clone()
        static_pos = torch.full((1, 1), ctx, dtype=torch.long, device=device)

        def step():
            o = model(input_ids=static_ids, position_ids=static_pos, use_cache=True, **{cname: cache})
            return o.logits[:, -1, :].argmax(-1, keepdim=True)

        if use_graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(warmup):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            # The warm-up advanced the cache's device-side write position:
            # put it back (the slots it wrote lie past the ones attended).
            for l in layers:
                l.cumulative_length.fill_(ctx)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_next = step()
            captured = True
            torch.cuda.synchronize()
            if any(int(l.cumulative_length) != ctx for l in layers):
                raise RuntimeError("capturing the graph moved the cache position")

        outs = torch.empty(tokens, dtype=torch.long, device=device)
        times = []
        wall0 = time.perf_counter()
        if use_graph:
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for _ in range(tokens)]
            for i in range(tokens):
                static_pos.fill_(ctx + i)
                evs[i][0].record()
                g.replay()
                evs[i][1].record()
                outs[i:i + 1].copy_(static_next.view(1))
                static_ids.copy_(static_next)
            torch.cuda.synchronize()
            times = [a.elapsed_time(b) for a, b in evs]
        else:
            for i in range(tokens):
                static_pos.fill_(ctx + i)
                t0 = time.perf_counter()
                nxt = step()
                times.append((time.perf_counter() - t0) * 1e3)
                outs[i:i + 1].copy_(nxt.view(1))
                static_ids.copy_(nxt)
        sync(torch, device)
        wall_ms = (time.perf_counter() - wall0) * 1e3 / tokens
        end = [int(l.cumulative_length) for l in layers]
        if any(e != ctx + tokens for e in end):
            raise RuntimeError("static cache position %d after %d steps from %d (expected %d)"
                               % (end[0], tokens, ctx, ctx + tokens))
        gen = [int(first)] + [int(x) for x in outs.tolist()]
    if use_graph:
        del g
    del cache, static_ids, static_pos, outs
    r = summary(times)
    r.update(attn="sdpa", cache="StaticCache(%d)" % max_len, captured=captured,
             prefill_ms=prefill_ms, wall_ms_per_token=wall_ms, tokens=gen)
    return r


def free(torch, device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def agree(a, b, n):
    k = 0
    for x, y in zip(a[:n], b[:n]):
        if x != y:
            break
        k += 1
    return k


def write_results(out_dir, name, res):
    d = Path(out_dir) / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "peers.json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    lines = []
    for peer in ("eager", "graph", "prefill"):
        p = res.get(peer) or {}
        lines.append("%s_ok=%d" % (peer, 1 if p.get("ok") else 0))
        if p.get("ok"):
            lines.append("%s_ms=%.4f" % (peer, p["median_ms"]))
            lines.append("%s_min_ms=%.4f" % (peer, p["min_ms"]))
            lines.append("%s_max_ms=%.4f" % (peer, p["max_ms"]))
            lines.append("%s_prefill_ms=%.1f" % (peer, p["prefill_ms"]))
            lines.append("%s_tokens=%s" % (peer, " ".join(map(str, p["tokens"]))))
            if "wall_ms_per_token" in p:
                lines.append("%s_wall_ms=%.4f" % (peer, p["wall_ms_per_token"]))
            if "captured" in p:
                lines.append("%s_captured=%d" % (peer, 1 if p["captured"] else 0))
            lines.append("%s_s=%.1f" % (peer, p["elapsed_s"]))
        else:
            lines.append("%s_error=%s" % (peer, p.get("error", "not run")))
    for k in ("load_s", "agree", "compare", "load_error", "torch", "transformers", "device_name"):
        if res.get(k) is not None:
            v = res[k]
            lines.append("%s=%s" % (k, ("%.1f" % v) if isinstance(v, float) else v))
    with open(d / "peers.env", "w") as f:
        f.write("\n".join(lines) + "\n")


def bench_model(torch, transformers, name, d, args):
    res = {"model": name, "dir": str(d), "ctx": args.ctx, "tokens": args.tokens,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "device": args.device,
           "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"),
           "compare": args.compare}
    model = None
    t0 = time.perf_counter()
    try:
        model = load_model(torch, transformers, str(d), args.device)
    except Exception as e:
        log("%s: loading failed:\n%s" % (name, traceback.format_exc()))
        res["load_error"] = one_line(e)
        for peer in ("eager", "graph", "prefill"):
            res[peer] = {"ok": False, "error": "load: " + one_line(e)}
        free(torch, args.device)
        return res
    res["load_s"] = time.perf_counter() - t0
    vocab = int(model.config.vocab_size)
    prompt = prompt_ids(args.ctx, vocab)
    log("%s: loaded in %.1f s (%d parameters)" % (name, res["load_s"], sum(p.numel() for p in model.parameters())))
    for peer in ("eager", "graph", "prefill"):
        t1 = time.perf_counter()
        try:
            if peer == "eager":
                r = run_eager(torch, model, prompt, args.tokens, args.device)
            elif peer == "prefill":
                r = run_prefill(torch, model, prompt, args.device)
            else:
                r = run_graph(torch, transformers, model, prompt, args.tokens, args.device)
            r["ok"] = True
            r["elapsed_s"] = time.perf_counter() - t1
            log("%s: %s: median %.3f ms/token (min %.3f, max %.3f), prefill %.1f ms, %.1f s"
                % (name, peer, r["median_ms"], r["min_ms"], r["max_ms"], r["prefill_ms"], r["elapsed_s"]))
        except Exception as e:
            log("%s: %s failed:\n%s" % (name, peer, traceback.format_exc()))
            r = {"ok": False, "error": one_line(e), "elapsed_s": time.perf_counter() - t1}
        res[peer] = r
        free(torch, args.device)
    e, g = res["eager"], res["graph"]
    if e.get("ok") and g.get("ok"):
        n = min(args.compare, len(e["tokens"]), len(g["tokens"]))
        k = agree(e["tokens"], g["tokens"], n)
        res["agree"], res["compare"] = k, n
        if k < n:
            log("%s: warning: the graph peer's greedy tokens differ from HF eager's at token %d: "
                "%s vs %s" % (name, k, g["tokens"][:n], e["tokens"][:n]))
    del model
    free(torch, args.device)
    return res


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="peers.py", description="PyTorch peers for make bench "
                                 "(HF eager and PyTorch + CUDA graph, batch 1).")
    ap.add_argument("--model", nargs=2, action="append", metavar=("NAME", "DIR"), required=True,
                    help="a model: its name in the table and its directory (config.json, "
                         "model.safetensors); repeatable")
    ap.add_argument("--ctx", type=int, default=512, help="prompt length (default 512)")
    ap.add_argument("--tokens", type=int, default=64, help="decode steps timed (default 64)")
    ap.add_argument("--compare", type=int, default=8,
                    help="compare the first N greedy tokens of the two peers (default 8)")
    ap.add_argument("--out-dir", required=True, help="writes OUT/NAME/peers.json and peers.env")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda (default); cpu is a dry run without CUDA graphs")
    args = ap.parse_args(argv)
    if args.ctx < 1 or args.tokens < 1 or args.compare < 1:
        ap.error("--ctx, --tokens and --compare must be positive")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import torch
        import transformers
    except ImportError as e:
        log("error: needs torch and transformers: %s" % e)
        for name, _ in args.model:
            write_results(args.out_dir, name, {
                "model": name, "load_error": one_line(e),
                "eager": {"ok": False, "error": one_line(e)},
                "graph": {"ok": False, "error": one_line(e)}})
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        log("error: torch sees no CUDA device")
        for name, _ in args.model:
            err = "torch sees no CUDA device"
            write_results(args.out_dir, name, {"model": name, "load_error": err,
                                               "eager": {"ok": False, "error": err},
                                               "graph": {"ok": False, "error": err}})
        return 1
    # Decode as shipped: bf16 weights, default matmul settings.
    torch.set_grad_enabled(False)
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    log("torch %s, transformers %s, %s" % (torch.__version__, transformers.__version__,
                                           torch.cuda.get_device_name() if args.device == "cuda" else "cpu"))
    ok = True
    for name, d in args.model:
        t0 = time.perf_counter()
        res = bench_model(torch, transformers, name, Path(d), args)
        res["elapsed_s"] = time.perf_counter() - t0
        write_results(args.out_dir, name, res)
        ok = ok and bool(res["eager"].get("ok")) and bool(res["graph"].get("ok"))
        log("%s: done in %.1f s" % (name, res["elapsed_s"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
