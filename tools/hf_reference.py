#!/usr/bin/env python3
"""Reference outputs from HF transformers, for the compiler's parity tests.

Builds small *random* Llama and Qwen3 models from config objects (nothing is
downloaded: no from_pretrained of hub models, no tokenizer), saves them the way
an HF checkpoint looks, and records a greedy decode plus the float32 logits of
every decode step.

For each preset NAME it writes DIR/NAME/:

  config.json        the HF config (config.to_json_file, every key, not just
                     the ones that differ from the defaults)
  model.safetensors  bf16 weights under the HF names ("model.embed_tokens.weight",
                     "model.layers.0.self_attn.q_proj.weight", ...,
                     "lm_head.weight" only when the embeddings are NOT tied: a
                     tied model stores the matrix once, as HF's save_pretrained
                     does); one file, never sharded
  reference.json     preset, versions, "prompt" (ids), "generated" (greedy ids),
                     "margins" (top-1 minus top-2 logit per step),
                     "last_logits_file", "all_logits_file", shapes, rope, init
  last_logits.f32    float32 little-endian, [vocab]: logits at the last prompt
                     position (the step that produced generated[0])
  all_logits.f32     float32 little-endian, [steps, vocab]: row i holds the
                     logits at position prompt_len-1+i, the ones generated[i]
                     is the argmax of; row 0 == last_logits (left out for the
                     *-shape presets unless --all-logits)
  prompt.ids         the prompt, comma-separated, one line
  generated.ids      the greedy ids, space-separated, one line

Numerics: the random weights are rounded to bf16 (that is what is saved), and
the reference runs on exactly those values in float32 (default; --dtype-compute
bfloat16 runs in bf16 instead), eager attention, KV cache, greedy argmax with a
hand-written loop (prompt in one forward pass, then one token per pass with
the KV cache), so the recorded logits are exactly what picked each token.
TF32 is switched off on CUDA. The end-of-sequence token does not stop decoding:
there are always --steps generated tokens. The prompt is PROMPT_LEN ids drawn
from [0, vocab) by a seeded generator; if some step's top-1/top-2 margin is
below --min-margin (a near-tie), the prompt is redrawn (same weights).

torch, transformers and safetensors are imported only when a model is built,
so --help and --list work without them.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

# Never reach for the network: everything here is built from config objects,
# and the only from_pretrained-like call (the reload check) reads a local dir.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROMPT_LEN = 7

# ---------------------------------------------------------------------------
# Random initialisation
# ---------------------------------------------------------------------------
# HF's own init (std 0.02, norm weights exactly 1) gives near-uniform logits
# and norm weights that are all ones, which tests too little. We re-initialise
# every parameter (d = hidden_size):
#
#   Linear weights (q,k,v,o,gate,up,down)  N(0, (LINEAR_GAINS[proj] / sqrt(fan_in))^2)
#   embed_tokens and lm_head               N(0, (EMBED_GAIN / sqrt(d))^2)
#   every RMSNorm weight (input/post-attn,
#     Qwen3 q_norm/k_norm, final norm)      1 + NORM_JITTER * N(0, 1)
#
# Why these scales (all layers are pre-norm, so what enters each projection
# has RMS ~1 whatever the residual's scale; a gain g makes a projection's
# output components ~g times its input's RMS):
#  * q, k gain 1: attention scores q.k/sqrt(head_dim) have std ~1 (Qwen3's
#    q_norm/k_norm give the same whatever the gain): softmax is visibly
#    peaked but not one-hot. v, o gain 1: attention adds RMS ~0.5-1 to the
#    residual, more than the embedding (~0.3), so layer 0's MLP input is
#    mostly attention output: attention steers everything after it.
#  * gate, up gain 2: silu sees pre-activations of std 2, its negative tail
#    and its near-linear part both; down gain 4: each MLP adds RMS ~3-6.
#  * EMBED_GAIN 3: the final RMSNorm's output has RMS ~1, so the logits
#    W_out . h have std ~3 for tied (W_out = embedding) and untied (lm_head
#    drawn alike) models. EXPECTED LOGIT SCALE: std ~3 over the vocabulary,
#    top logit ~9-13, median top-1/top-2 margin ~0.65 (measured).
#  * Why not all gains 0.5 (or 1): the residual then changes little from one
#    step to the next (the attention average over the context dominates and
#    the MLPs add little), and a tied model also favours its input token
#    (logit bonus |e_t|^2 / RMS(h) = EMBED_GAIN^2 / RMS(h)); measured with
#    32 greedy steps, 10 runs per preset: all gains 0.5 -> the tied presets
#    emit one token 32 times; the gains below -> 0.3-2 immediate repeats per
#    32 tokens and 27-29 distinct tokens out of 32, untied and tied alike.
#  * Near-ties (top-1/top-2 margins < --min-margin) are avoided by
#    redrawing the prompt (same weights).
#
# The numbers are drawn on the CPU from a torch.Generator seeded per preset,
# in float32, parameter by parameter in named_parameters() order, so the
# weights do not depend on --device. They are then rounded to bf16.
LINEAR_GAINS = {"q_proj": 1.0, "k_proj": 1.0, "v_proj": 1.0, "o_proj": 1.0,
                "gate_proj": 2.0, "up_proj": 2.0, "down_proj": 4.0}
EMBED_GAIN = 3.0
NORM_JITTER = 0.1

# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------
# One dict per preset:
#   arch         "llama" | "qwen3"  (picks LlamaForCausalLM / Qwen3ForCausalLM)
#   default      part of the default set (no --preset given)
#   seed         seed of the weights (the prompt generator is seeded with
#                seed*1000 + 1 + attempt, see draw_prompt)
#   steps        default number of generated tokens (--steps overrides)
#   all_logits   write all_logits.f32 by default (--all-logits forces it on)
#   build_dtype  "float32": build in fp32 (tiny models);
#                "bfloat16": build in bf16 directly on the device (big shapes),
#                then upcast to --dtype-compute for the reference run
#   verify       reload config.json + model.safetensors into a fresh model and
#                check that it reproduces the run (--verify/--no-verify)
#   max_bytes    warn when the preset's files exceed this (None: no limit)
#   rope         {"theta": float, "scaling": None or an HF rope-scaling dict
#                 ({"rope_type": "llama3", "factor": ..., ...})}. Kept out of
#                 "config" because transformers 4.x spells it
#                 rope_theta/rope_scaling and 5.x rope_parameters.
#   config       keyword arguments for LlamaConfig / Qwen3Config
# The keys of "config" are passed as they are, so any config field can be set.

_TINY = dict(default=True, steps=16, all_logits=True, build_dtype="float32",
             verify=True, max_bytes=1_500_000)
_SHAPE = dict(default=False, steps=32, all_logits=False, build_dtype="bfloat16",
              verify=False, max_bytes=None)

PRESETS = {
    # Llama, GQA ratio 3, tied, llama3 rope scaling with a small
    # original_max_position_embeddings (32) so the three frequency bands of
    # llama3 scaling (kept / smoothed / divided by factor) all occur with
    # head_dim 16.
    "llama-tiny": dict(
        _TINY, arch="llama", seed=1001,
        rope=dict(theta=10000.0, scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
        config=dict(
            vocab_size=512, hidden_size=96, intermediate_size=200,
            num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
            hidden_act="silu", bos_token_id=1, eos_token_id=2),
    ),
    # Qwen3, GQA ratio 2, untied, heads*head_dim (144) != hidden (80).
    "qwen3-tiny": dict(
        _TINY, arch="qwen3", seed=1002,
        rope=dict(theta=1000000.0, scaling=None),
        config=dict(
            vocab_size=640, hidden_size=80, intermediate_size=144,
            num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
            head_dim=24, max_position_embeddings=512, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False,
            attention_bias=False, hidden_act="silu", eos_token_id=5),
    ),
    # Qwen3, GQA ratio 2 with 5 kv heads, tied, heads*head_dim (80) != hidden (64).
    "qwen3-tied": dict(
        _TINY, arch="qwen3", seed=1003,
        rope=dict(theta=1000000.0, scaling=None),
        config=dict(
            vocab_size=384, hidden_size=64, intermediate_size=144,
            num_hidden_layers=2, num_attention_heads=10, num_key_value_heads=5,
            head_dim=8, max_position_embeddings=512, rms_norm_eps=1e-6,
            tie_word_embeddings=True, use_sliding_window=False,
            attention_bias=False, hidden_act="silu", eos_token_id=5),
    ),
    # Llama, GQA ratio 3 with 9 heads, untied, plain rope (theta 500000).
    "llama-untied": dict(
        _TINY, arch="llama", seed=1004,
        rope=dict(theta=500000.0, scaling=None),
        config=dict(
            vocab_size=448, hidden_size=108, intermediate_size=180,
            num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
            head_dim=12, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
            hidden_act="silu", bos_token_id=1, eos_token_id=2),
    ),
    # Shaped for tensor parallelism (mpk build --tp 2 and --tp 4): heads,
    # kv heads, hidden, intermediate and vocab all divisible by 4. Qwen3,
    # GQA ratio 2, untied, heads*head_dim (128) != hidden (96).
    "qwen3-tp": dict(
        _TINY, arch="qwen3", seed=1005,
        rope=dict(theta=1000000.0, scaling=None),
        config=dict(
            vocab_size=512, hidden_size=96, intermediate_size=160,
            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
            head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False,
            attention_bias=False, hidden_act="silu", eos_token_id=5),
    ),
    # Llama for tensor parallelism: GQA ratio 2 (8 heads, 4 kv heads), tied,
    # llama3 rope scaling.
    "llama-tp": dict(
        _TINY, arch="llama", seed=1006,
        rope=dict(theta=10000.0, scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
        config=dict(
            vocab_size=384, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
            head_dim=12, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
            hidden_act="silu", bos_token_id=1, eos_token_id=2),
    ),
    # ---- real shapes, random weights (not in the default set) ----
    # Qwen/Qwen3-0.6B's dimensions.
    "qwen3-0.6b-shape": dict(
        _SHAPE, arch="qwen3", seed=2001,
        rope=dict(theta=1000000.0, scaling=None),
        config=dict(
            vocab_size=151936, hidden_size=1024, intermediate_size=3072,
            num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
            head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
            tie_word_embeddings=True, use_sliding_window=False,
            attention_bias=False, hidden_act="silu",
            bos_token_id=151643, eos_token_id=151645),
    ),
    # meta-llama/Llama-3.2-1B's dimensions.
    "llama-3.2-1b-shape": dict(
        _SHAPE, arch="llama", seed=2002,
        rope=dict(theta=500000.0, scaling={
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        config=dict(
            vocab_size=128256, hidden_size=2048, intermediate_size=8192,
            num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
            head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
            tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
            hidden_act="silu", bos_token_id=128000, eos_token_id=128001),
    ),
    # Qwen/Qwen3-8B's dimensions (fp32 reference: ~33 GB of weights).
    "qwen3-8b-shape": dict(
        _SHAPE, arch="qwen3", seed=2003,
        rope=dict(theta=1000000.0, scaling=None),
        config=dict(
            vocab_size=151936, hidden_size=4096, intermediate_size=12288,
            num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
            head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False,
            attention_bias=False, hidden_act="silu",
            bos_token_id=151643, eos_token_id=151645),
    ),
}


class RefError(Exception):
    """An error reported as one line, with exit status 1."""


def warn(msg):
    print("hf_reference: warning: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Shape arithmetic (no torch needed: used by --list too)
# ---------------------------------------------------------------------------

def expected_param_count(p):
    c = p["config"]
    d, v, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    h, kv, hd, f = (c["num_attention_heads"], c["num_key_value_heads"],
                    c["head_dim"], c["intermediate_size"])
    per_layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f + 2 * d
    if p["arch"] == "qwen3":
        per_layer += 2 * hd  # q_norm, k_norm
    n = v * d + L * per_layer + d
    if not c["tie_word_embeddings"]:
        n += v * d
    return n


def list_presets():
    for name, p in PRESETS.items():
        c = p["config"]
        rope = p["rope"]
        sc = rope["scaling"]
        rope_s = "theta=%g" % rope["theta"]
        if sc:
            rope_s += " %s(factor=%g,orig=%d)" % (
                sc["rope_type"], sc["factor"], sc["original_max_position_embeddings"])
        print("%-20s %-5s %s vocab=%d hidden=%d layers=%d heads=%d kv=%d "
              "head_dim=%d inter=%d %s %s params=%s" % (
                  name, p["arch"], "default" if p["default"] else "       ",
                  c["vocab_size"], c["hidden_size"], c["num_hidden_layers"],
                  c["num_attention_heads"], c["num_key_value_heads"],
                  c["head_dim"], c["intermediate_size"],
                  "tied  " if c["tie_word_embeddings"] else "untied", rope_s,
                  format(expected_param_count(p), ",")))


# ---------------------------------------------------------------------------
# torch / transformers helpers (imported lazily)
# ---------------------------------------------------------------------------

def import_stack():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        raise RefError("needs torch, transformers, safetensors and numpy "
                       "(import failed: %s)" % e)
    if sys.byteorder != "little":
        raise RefError("the .f32 / .safetensors writers assume a little-endian host")
    import torch
    import transformers
    return torch, transformers


def arch_classes(transformers, arch):
    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
             "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}[arch]
    try:
        return getattr(transformers, names[0]), getattr(transformers, names[1])
    except AttributeError:
        raise RefError("transformers %s has no %s (Qwen3 needs transformers >= 4.51)"
                       % (transformers.__version__, names[1]))


def config_uses_rope_parameters(config_cls):
    """True for transformers 5.x configs (rope_parameters), False for 4.x
    (rope_theta + rope_scaling)."""
    fields = getattr(config_cls, "__dataclass_fields__", None) or {}
    if "rope_parameters" in fields:
        return True
    import inspect
    try:
        return "rope_parameters" in inspect.signature(config_cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def set_attn_eager(config):
    try:
        config._attn_implementation = "eager"
    except AttributeError:
        config._attn_implementation_internal = "eager"


def build_config(transformers, torch, preset):
    config_cls, _ = arch_classes(transformers, preset["arch"])
    kw = dict(preset["config"])
    theta = float(preset["rope"]["theta"])
    scaling = preset["rope"]["scaling"]
    if config_uses_rope_parameters(config_cls):
        rp = dict(scaling) if scaling else {"rope_type": "default"}
        rp["rope_theta"] = theta
        kw["rope_parameters"] = rp
    else:
        kw["rope_theta"] = theta
        if scaling:
            kw["rope_scaling"] = dict(scaling)
    kw["use_cache"] = True
    kw["attn_implementation"] = "eager"
    try:
        config = config_cls(**kw)
    except Exception as e:  # strict validation in 5.x raises plain exceptions
        raise RefError("%s(**%r) failed: %s: %s" % (config_cls.__name__, kw,
                                                     type(e).__name__, e))
    set_attn_eager(config)
    # The checkpoint holds bf16 weights: say so in config.json like real
    # checkpoints do ("dtype" in 5.x, "torch_dtype" in 4.x). Cosmetic only.
    try:
        if hasattr(config, "dtype"):
            config.dtype = torch.bfloat16
        else:
            config.torch_dtype = torch.bfloat16
    except Exception as e:
        warn("could not record dtype bfloat16 in the config: %s" % e)
    return config


def rope_summary(preset):
    """Version-independent rope description, written to reference.json."""
    out = {"rope_type": "default", "rope_theta": float(preset["rope"]["theta"])}
    if preset["rope"]["scaling"]:
        out.update(preset["rope"]["scaling"])
    return out


def expected_inv_freq(preset):
    """inv_freq as HF computes it (in float64 here), for the rope check."""
    head_dim = preset["config"]["head_dim"]
    base = float(preset["rope"]["theta"])
    inv = [1.0 / base ** (i / head_dim) for i in range(0, head_dim, 2)]
    sc = preset["rope"]["scaling"]
    if not sc:
        return inv, inv
    if sc["rope_type"] != "llama3":
        raise RefError("rope check knows only llama3 scaling, not %r" % sc["rope_type"])
    factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    old = sc["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f)
        elif wl > lo_wl:
            out.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    return out, inv


def check_model(torch, model, preset, config, dtype_compute=None):
    """Fail loudly when the built model is not the one the preset describes:
    rope (llama3 scaling really applied), eager attention, shapes, tying."""
    c = preset["config"]
    what = preset["_name"]
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "eager":
        raise RefError("%s: attention implementation is %r, not 'eager'" % (what, attn))

    # Rope: every module carrying an inv_freq buffer (model.model.rotary_emb in
    # current versions; one per attention layer in old ones).
    want, unscaled = expected_inv_freq(preset)
    rot = [m for m in model.modules()
           if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    if not rot:
        raise RefError("%s: found no rotary embedding module (no inv_freq buffer)" % what)
    want_type = rope_summary(preset)["rope_type"]
    for m in rot:
        rt = getattr(m, "rope_type", None)
        if rt is not None and rt != want_type:
            raise RefError("%s: rotary embedding rope_type is %r, expected %r "
                           "(config rope fields not understood by transformers %s?)"
                           % (what, rt, want_type, __import__("transformers").__version__))
        inv = m.inv_freq.detach().double().cpu().tolist()
        if m.inv_freq.dtype != torch.float32:
            raise RefError("%s: inv_freq is %s, not float32" % (what, m.inv_freq.dtype))
        if len(inv) != len(want) or any(abs(a - b) > 1e-5 * b for a, b in zip(inv, want)):
            raise RefError("%s: rotary inv_freq %s does not match the expected %s rope %s"
                           % (what, inv, want_type, want))
        scale = getattr(m, "attention_scaling", 1.0)
        if abs(float(scale) - 1.0) > 1e-12:
            raise RefError("%s: rotary attention_scaling is %r, expected 1.0" % (what, scale))
    if want_type != "default" and not any(abs(a - b) > 1e-2 * b for a, b in zip(want, unscaled)):
        raise RefError("%s: preset's rope scaling changes no frequency: a useless test" % what)

    # Shapes.
    base = model.model
    a0 = base.layers[0].self_attn
    d, h, kv, hd = (c["hidden_size"], c["num_attention_heads"],
                    c["num_key_value_heads"], c["head_dim"])
    shapes = {
        "q_proj": (a0.q_proj.weight.shape, (h * hd, d)),
        "k_proj": (a0.k_proj.weight.shape, (kv * hd, d)),
        "v_proj": (a0.v_proj.weight.shape, (kv * hd, d)),
        "o_proj": (a0.o_proj.weight.shape, (d, h * hd)),
        "embed_tokens": (base.embed_tokens.weight.shape, (c["vocab_size"], d)),
        "layers": ((len(base.layers),), (c["num_hidden_layers"],)),
    }
    for k, (got, exp) in shapes.items():
        if tuple(got) != tuple(exp):
            raise RefError("%s: %s has shape %s, expected %s" % (what, k, tuple(got), exp))
    if preset["arch"] == "qwen3" and not hasattr(a0, "q_norm"):
        raise RefError("%s: Qwen3 attention without q_norm" % what)

    # Tying.
    emb, head = base.embed_tokens.weight, model.lm_head.weight
    tied = emb is head or (emb.data_ptr() == head.data_ptr() and emb.shape == head.shape)
    if tied != bool(c["tie_word_embeddings"]):
        raise RefError("%s: lm_head is %s the embedding, but tie_word_embeddings=%s"
                       % (what, "tied to" if tied else "separate from",
                          c["tie_word_embeddings"]))
    if dtype_compute is not None:
        bad = {str(p.dtype) for p in model.parameters() if p.dtype != dtype_compute}
        if bad:
            raise RefError("%s: parameters in %s, expected %s" % (what, bad, dtype_compute))


def construct_model(torch, transformers, preset, config, dtype, device):
    """Build the HF model with parameters of `dtype` directly on `device`."""
    _, model_cls = arch_classes(transformers, preset["arch"])
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(prev)
    cast_params_(torch, model, dtype)  # in case the constructor ignored the default
    model.eval()
    return model


def cast_params_(torch, model, dtype):
    """Cast parameters only. model.to(dtype) would also cast the rotary
    inv_freq buffer, which must stay float32. Tied parameters are one
    Parameter object, so replacing .data keeps them tied."""
    for p in model.parameters():
        if p.dtype != dtype:
            p.data = p.data.to(dtype)


def norm_param_names(model):
    names = set()
    for mname, m in model.named_modules():
        if "RMSNorm" in type(m).__name__:
            for pname, _ in m.named_parameters(recurse=False):
                names.add((mname + "." if mname else "") + pname)
    return names


def randomize_(torch, model, preset, seed):
    """Re-initialise every parameter (see the comment at LINEAR_GAINS) with
    bf16-representable values. named_parameters() lists a tied lm_head once,
    under model.embed_tokens.weight."""
    d = preset["config"]["hidden_size"]
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    norms = norm_param_names(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if name in norms:
                vals = 1.0 + NORM_JITTER * torch.randn(shape, generator=gen)
            elif name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                vals = torch.randn(shape, generator=gen) * (EMBED_GAIN / math.sqrt(d))
            elif p.dim() == 2 and name.endswith(".weight") and name.split(".")[-2] in LINEAR_GAINS:
                gain = LINEAR_GAINS[name.split(".")[-2]]
                vals = torch.randn(shape, generator=gen) * (gain / math.sqrt(shape[1]))
            else:
                raise RefError("don't know how to initialise parameter %s %s" % (name, shape))
            p.data.copy_(vals.to(torch.bfloat16).to(p.dtype))
            del vals


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------

def hf_weight_tensors(model, tied):
    """(name, parameter) in HF checkpoint naming, lm_head only when untied."""
    params = dict(model.named_parameters())
    sd_keys = set(model.state_dict().keys())
    extra = sd_keys - set(params)
    allowed = {"lm_head.weight"} if tied else set()
    if extra - allowed:
        raise RefError("state_dict has entries that are not parameters: %s" % sorted(extra - allowed))
    if tied and "lm_head.weight" in params:
        raise RefError("tied model lists lm_head.weight as its own parameter")
    if not tied and "lm_head.weight" not in params:
        raise RefError("untied model has no lm_head.weight parameter")
    return sorted(params.items())


def write_safetensors_bf16(torch, path, named_tensors):
    """Stream a .safetensors file tensor by tensor (bf16, little-endian):
    8-byte header length, JSON header padded with spaces to 8 bytes, data.
    Streaming keeps host memory at one tensor even for the 8B shape."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, t in named_tensors:
        n = t.numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name, t in named_tensors:
            cpu = t.detach().to(torch.bfloat16).contiguous().cpu()
            f.write(cpu.view(torch.int16).numpy().tobytes())
            del cpu
    return off + 8 + len(hb)


def check_safetensors(torch, path, named_tensors, full):
    """Read the file back with the safetensors library: names, shapes, dtypes,
    and (full=True) every value; else the first and last tensor."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = set(f.keys())
        want = {n for n, _ in named_tensors}
        if keys != want:
            raise RefError("%s: read back with wrong tensor names (first differences: %s)"
                           % (path, sorted(keys ^ want)[:5]))
        todo = named_tensors if full else [named_tensors[0], named_tensors[-1]]
        for name, t in todo:
            got = f.get_tensor(name)
            if got.dtype != torch.bfloat16 or tuple(got.shape) != tuple(t.shape):
                raise RefError("%s: %s read back as %s %s" % (path, name, got.dtype, tuple(got.shape)))
            if not torch.equal(got, t.detach().to(torch.bfloat16).cpu()):
                raise RefError("%s: %s read back with different values" % (path, name))


def write_f32(path, tensor):
    import numpy as np
    arr = tensor.detach().float().cpu().contiguous().numpy().astype("<f4", copy=False)
    arr.tofile(str(path))
    return arr.nbytes


def sha256_file(path, limit=2 << 30):
    if path.stat().st_size > limit:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Reference run
# ---------------------------------------------------------------------------

def greedy(torch, model, prompt, steps, device):
    """Prompt in one forward pass, then one token per pass with the KV cache.
    Returns (generated ids, logits [steps, vocab] float32 on the CPU)."""
    # transformers <= 5.2x call the KV cache `past_key_values` (argument and
    # output field); newer ones call it `cache` (the old name still works there
    # but warns). Use whichever this model's forward() declares.
    import inspect
    try:
        fwd_params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        fwd_params = {}
    cache_arg = "cache" if "cache" in fwd_params else "past_key_values"
    generated, rows = [], []
    cur = torch.tensor([prompt], dtype=torch.long, device=device)
    past = None
    pos = 0
    with torch.no_grad():
        for _ in range(steps):
            n = cur.shape[1]
            kw = {cache_arg: past}
            out = model(input_ids=cur,
                        attention_mask=torch.ones((1, pos + n), dtype=torch.long, device=device),
                        position_ids=torch.arange(pos, pos + n, device=device).unsqueeze(0),
                        use_cache=True, return_dict=True, **kw)
            past = getattr(out, cache_arg, None)
            if past is None:
                raise RefError("the model returned no KV cache (%s) with use_cache=True" % cache_arg)
            # The cache must hold every position fed so far (else the decode
            # steps would silently run without their context).
            if hasattr(past, "get_seq_length") and int(past.get_seq_length()) != pos + n:
                raise RefError("KV cache holds %d positions after feeding %d"
                               % (int(past.get_seq_length()), pos + n))
            logits = out.logits[0, -1].float()
            tok = int(torch.argmax(logits).item())
            rows.append(logits.cpu())
            generated.append(tok)
            pos += n
            cur = torch.tensor([[tok]], dtype=torch.long, device=device)
            del out
    return generated, torch.stack(rows)


def margins_of(torch, all_logits):
    top2 = torch.topk(all_logits, 2, dim=-1).values
    return [float(x) for x in (top2[:, 0] - top2[:, 1])]


def setup_torch(torch, device):
    # Exact fp32 matmuls on CUDA (no TF32).
    try:
        torch.set_float32_matmul_precision("highest")
    except Exception:
        pass
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RefError("--device cuda but torch sees no CUDA device")
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        except Exception:
            pass


def resolve_device(torch, arg, preset):
    if arg != "auto":
        return arg
    if preset["build_dtype"] == "bfloat16" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def check_fp32_fits(torch, device, n_params, what):
    """Before upcasting a bf16-built model to fp32 on the GPU."""
    if not device.startswith("cuda"):
        return
    free, _ = torch.cuda.mem_get_info()
    need = n_params * 2 + (2 << 30)  # +2 bytes/param (bf16 -> fp32) and slack
    if free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < need:
        raise RefError("%s: not enough GPU memory for a float32 reference "
                       "(%.1f GB free, ~%.1f GB more needed): use --dtype-compute bfloat16"
                       % (what, free / 1e9, need / 1e9))


def prepare_model(torch, transformers, preset, device, dtype_compute):
    """Build the preset's model, randomise it (bf16-representable values).
    Returns (config, model) with parameters still in the preset's
    build_dtype; cast with to_compute() before the reference run."""
    name = preset["_name"]
    seed = preset["seed"]
    build_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[preset["build_dtype"]]
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    config = build_config(transformers, torch, preset)
    model = construct_model(torch, transformers, preset, config, build_dtype, device)
    check_model(torch, model, preset, config, build_dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != expected_param_count(preset):
        raise RefError("%s: model has %d parameters, the preset implies %d"
                       % (name, n_params, expected_param_count(preset)))
    randomize_(torch, model, preset, seed)
    return config, model


def to_compute(torch, model, preset, config, device, dtype_compute):
    n_params = sum(p.numel() for p in model.parameters())
    if any(p.dtype != dtype_compute for p in model.parameters()):
        if dtype_compute == torch.float32:
            check_fp32_fits(torch, device, n_params, preset["_name"])
        cast_params_(torch, model, dtype_compute)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    check_model(torch, model, preset, config, dtype_compute)


def draw_prompt(torch, preset, attempt):
    """PROMPT_LEN ids from [0, vocab), from a generator seeded by the preset's
    seed and the attempt number (attempt 0 is the first choice)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(preset["seed"] * 1000 + 1 + attempt)
    return [int(x) for x in torch.randint(0, preset["config"]["vocab_size"],
                                          (PROMPT_LEN,), generator=g)]


def reference_run(torch, model, preset, device, steps, min_margin, tries):
    """Greedy run; while some step's top-1/top-2 margin is below min_margin
    (a near-tie that a tiny numeric difference could flip), redraw the prompt,
    up to `tries` prompts; keep the one with the largest minimum margin."""
    best = None
    for attempt in range(max(1, tries)):
        prompt = draw_prompt(torch, preset, attempt)
        generated, all_logits = greedy(torch, model, prompt, steps, device)
        margins = margins_of(torch, all_logits)
        if best is None or min(margins) > min(best[4]):
            best = (attempt, prompt, generated, all_logits, margins)
        if min(margins) >= min_margin:
            break
    attempt, prompt, generated, all_logits, margins = best
    if min(margins) < min_margin:
        warn("%s: no prompt in %d tries has all margins >= %g; kept prompt attempt %d "
             "(min margin %.3g)" % (preset["_name"], tries, min_margin, attempt, min(margins)))
    return attempt, prompt, generated, all_logits, margins


def run_preset(name, args, torch, transformers):
    preset = dict(PRESETS[name])
    preset["_name"] = name
    c = preset["config"]
    tied = bool(c["tie_word_embeddings"])
    device = resolve_device(torch, args.device, preset)
    setup_torch(torch, device)
    steps = args.steps if args.steps is not None else preset["steps"]
    want_all = preset["all_logits"] or args.all_logits
    verify = preset["verify"] if args.verify is None else args.verify
    dtype_compute = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype_compute]
    out_dir = Path(args.out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    managed = ["config.json", "model.safetensors", "reference.json",
               "last_logits.f32", "all_logits.f32", "prompt.ids", "generated.ids"]
    for fn in managed:  # no stale files from an earlier run
        if (out_dir / fn).exists():
            (out_dir / fn).unlink()
    t0 = time.time()

    config, model = prepare_model(torch, transformers, preset, device, dtype_compute)
    n_params = sum(p.numel() for p in model.parameters())
    model_class = type(model).__name__

    # config.json: every key (use_diff=False), so a reader need not know
    # transformers' defaults; "architectures" as save_pretrained writes it.
    config.architectures = [type(model).__name__]
    config.to_json_file(str(out_dir / "config.json"), use_diff=False)

    # model.safetensors (bf16). Written before the cast to dtype_compute: the
    # parameters hold bf16 values either way.
    named = hf_weight_tensors(model, tied)
    if not args.no_weights:
        write_safetensors_bf16(torch, out_dir / "model.safetensors", named)
        check_safetensors(torch, out_dir / "model.safetensors", named,
                          full=n_params < 50_000_000)
    del named

    # Reference run in dtype_compute on the bf16-rounded weights.
    to_compute(torch, model, preset, config, device, dtype_compute)
    attempt, prompt, generated, all_logits, margins = reference_run(
        torch, model, preset, device, steps, args.min_margin, args.prompt_tries)
    if not all(math.isfinite(float(x)) for x in (all_logits.min(), all_logits.max())):
        raise RefError("%s: non-finite logits" % name)

    write_f32(out_dir / "last_logits.f32", all_logits[0])
    if want_all:
        write_f32(out_dir / "all_logits.f32", all_logits)
    # The same ids as plain text for shell scripts (tests/run-parity.sh):
    # the prompt comma-separated (mpk-run --prompt-ids), the continuation
    # space-separated.
    (out_dir / "prompt.ids").write_text(",".join(map(str, prompt)) + "\n")
    (out_dir / "generated.ids").write_text(" ".join(map(str, generated)) + "\n")

    # Reload check: config.json + model.safetensors alone must give the same run.
    verified = None
    if verify and not args.no_weights:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        model = None
        verified = verify_reload(torch, transformers, preset, out_dir, dtype_compute,
                                 device, prompt, steps, generated, all_logits)

    distinct = len(set(generated))
    repeats = sum(1 for a, b in zip(generated, generated[1:]) if a == b)
    if distinct <= max(1, steps // 8):
        warn("%s: greedy output has only %d distinct tokens: %s" % (name, distinct, generated))

    files = {}
    ref = {
        "preset": name,
        "arch": preset["arch"],
        "model_class": model_class,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "device": device,
        "device_name": (torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"),
        "weights_dtype": "bfloat16",
        "dtype_compute": args.dtype_compute,
        "attn_implementation": "eager",
        "seed": preset["seed"],
        "init": {"linear_std": {k: "%g/sqrt(fan_in)" % v for k, v in LINEAR_GAINS.items()},
                 "embed_std": EMBED_GAIN / math.sqrt(c["hidden_size"]),
                 "lm_head_std": (None if tied else EMBED_GAIN / math.sqrt(c["hidden_size"])),
                 "norm_weight": "1 + %g*N(0,1)" % NORM_JITTER},
        "num_params": n_params,
        "tie_word_embeddings": tied,
        "vocab_size": c["vocab_size"],
        "rope": rope_summary(preset),
        "prompt": prompt,
        "prompt_attempt": attempt,
        "steps": steps,
        "stops_at_eos": False,
        "generated": generated,
        "margins": margins,
        "min_margin": min(margins),
        "distinct_generated": distinct,
        "immediate_repeats": repeats,
        "logit_std_step0": float(all_logits[0].std()),
        "last_logits_file": "last_logits.f32",
        "last_logits_shape": [c["vocab_size"]],
        "all_logits_file": "all_logits.f32" if want_all else None,
        "all_logits_shape": [steps, c["vocab_size"]] if want_all else None,
        "logits_format": "float32 little-endian, row-major, no header",
        "weights_file": None if args.no_weights else "model.safetensors",
        "reload_verified": verified,
        "files": files,
    }
    for fn in managed:
        p = out_dir / fn
        if p.exists() and fn != "reference.json":
            files[fn] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    with open(out_dir / "reference.json", "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")

    total = sum((out_dir / fn).stat().st_size for fn in managed if (out_dir / fn).exists())
    if preset["max_bytes"] is not None and total > preset["max_bytes"]:
        warn("%s: files take %d bytes, more than the %d aimed for" % (name, total, preset["max_bytes"]))
    print("%s: params=%d bytes=%d prompt=%s generated=%s min_margin=%.4f  (%s, %s, %.1fs)"
          % (name, n_params, total, prompt, generated, min(margins), device,
             args.dtype_compute, time.time() - t0), flush=True)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def verify_reload(torch, transformers, preset, out_dir, dtype, device, prompt, steps,
                  generated, all_logits):
    """Rebuild the model from the written config.json (through AutoConfig, so
    the rope fields round-trip) and model.safetensors, rerun, compare."""
    from safetensors.torch import load_file
    name = preset["_name"]
    cfg2 = transformers.AutoConfig.from_pretrained(str(out_dir))
    set_attn_eager(cfg2)
    model2 = construct_model(torch, transformers, preset, cfg2, dtype, device)
    sd = load_file(str(out_dir / "model.safetensors"))
    res = model2.load_state_dict(sd, strict=False)
    missing, unexpected = list(res.missing_keys), list(res.unexpected_keys)
    allowed = ["lm_head.weight"] if preset["config"]["tie_word_embeddings"] else []
    if unexpected or sorted(missing) != allowed:
        raise RefError("%s: reload: missing %s, unexpected %s" % (name, missing, unexpected))
    check_model(torch, model2, preset, cfg2, dtype)
    gen2, logits2 = greedy(torch, model2, prompt, steps, device)
    diff = float((logits2 - all_logits).abs().max())
    del model2, sd
    if gen2 != generated or diff > 1e-4 * max(1.0, float(all_logits.abs().max())):
        raise RefError("%s: reloaded model differs: generated %s vs %s, max |dlogit| %.3g"
                       % (name, gen2, generated, diff))
    if diff != 0.0:
        warn("%s: reloaded model's logits differ by up to %.3g (not bit-identical)" % (name, diff))
    return {"max_abs_logit_diff": diff}


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def parse_args(argv):
    default_set = [n for n, p in PRESETS.items() if p["default"]]
    ap = argparse.ArgumentParser(
        prog="hf_reference.py",
        description="Make small random Llama / Qwen3 models with HF transformers and "
                    "record greedy reference outputs (bf16 weights, fp32 logits) for "
                    "the compiler's parity tests. Needs torch, transformers, "
                    "safetensors and numpy; downloads nothing.",
        epilog="Default presets: %s. Per preset it writes DIR/NAME/{config.json, "
               "model.safetensors, reference.json, last_logits.f32, all_logits.f32, "
               "prompt.ids, generated.ids}. "
               "See tools/README.md." % ", ".join(default_set))
    ap.add_argument("--out", metavar="DIR", help="output directory (required unless --list)")
    ap.add_argument("--preset", nargs="+", metavar="NAME",
                    help="presets to build (default: %s; 'all' = every preset)"
                         % " ".join(default_set))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where to run; auto (default): cpu for the tiny presets, "
                         "cuda (if available) for the *-shape presets")
    ap.add_argument("--steps", type=int, default=None,
                    help="generated tokens (default: 16 for tiny presets, 32 for *-shape)")
    ap.add_argument("--dtype-compute", default="float32", choices=["float32", "bfloat16"],
                    help="dtype of the reference run on the bf16-rounded weights "
                         "(default float32)")
    ap.add_argument("--min-margin", type=float, default=0.02,
                    help="redraw the prompt while some step's top-1/top-2 logit "
                         "margin is below this (default 0.02; 0 = keep the first prompt)")
    ap.add_argument("--prompt-tries", type=int, default=20,
                    help="at most this many prompts per preset (default 20)")
    ap.add_argument("--all-logits", action="store_true",
                    help="also write all_logits.f32 for presets that skip it (*-shape)")
    ap.add_argument("--no-weights", action="store_true",
                    help="skip model.safetensors (and the reload check)")
    vg = ap.add_mutually_exclusive_group()
    vg.add_argument("--verify", dest="verify", action="store_true", default=None,
                    help="reload config.json + model.safetensors and rerun "
                         "(default: on for tiny presets, off for *-shape)")
    vg.add_argument("--no-verify", dest="verify", action="store_false")
    ap.add_argument("--list", action="store_true", help="list the presets and exit")
    args = ap.parse_args(argv)
    if args.list:
        return args
    if not args.out:
        ap.error("--out DIR is required")
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.prompt_tries < 1:
        ap.error("--prompt-tries must be >= 1")
    names = args.preset or default_set
    if "all" in names:
        names = list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error("unknown preset(s) %s; known: %s" % (", ".join(unknown), ", ".join(PRESETS)))
    args.preset = list(dict.fromkeys(names))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        list_presets()
        return 0
    try:
        torch, transformers = import_stack()
        for name in args.preset:
            run_preset(name, args, torch, transformers)
    except RefError as e:
        print("hf_reference: error: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hf_reference: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
