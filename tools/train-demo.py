#!/usr/bin/env python3
"""train-demo.py - train the demo model: a small Llama that writes English.

Trains a byte-level BPE tokenizer (HF `tokenizers`) and a small
Llama-architecture model (HF transformers' LlamaForCausalLM) on the fortune
cookies of Debian's `fortunes` package, and saves a complete HF checkpoint
directory that both HF transformers and mpk load:

    config.json  model.safetensors (bf16)  generation_config.json
    tokenizer.json  tokenizer_config.json (a ChatML chat_template)

Then it records what HF transformers generates greedily from the saved bf16
weights (computed in float32) for a few prompts, for mpk's parity test
(tests/run-demo.sh), in tests/data/demo-ref by default (--ref).

The text. /usr/share/games/fortunes/* as installed by `apt-get install
fortunes` (fortunes-min ships a subset of the same files: fortunes,
literature, riddles). Its copyright file, /usr/share/doc/fortunes/copyright
(the same in fortunes-min), does not call the texts public domain: it says
that the package "falls under the BSD copyright" (Copyright (c) 1991 The
Regents of the University of California; the 4.4BSD licence with its
advertising clause deleted), names Ken Arnold as the original author of
fortune(6), says that the "cookie" file is from Karl Lehenbauer's postings
to alt.sources, and carries the notice of an atheism cookie file. Debian
ships it in main, i.e. as free to redistribute and modify. The quotations
themselves are short excerpts of many authors. `ascii-art` (pictures) and
`translate-me` (Latin) are left out.

Reproducible: the fortunes are read in sorted order and shuffled, the
weights initialised and the batches drawn from fixed seeds; on the CPU with
the same torch version and thread count a run is repeatable (two 10-step
runs on one machine gave the same model.safetensors, and two full runs the
same tokenizer.json). CUDA is used when there is one (bf16 autocast there),
else the CPU (float32). The committed model is the defaults' run on 2 CPU
cores (torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3): 1200 steps of
16 x 256 tokens (4.9M tokens, 5.1 epochs) in 27 minutes on a busy machine
(2000-5000 tokens a second), training loss 3.35, held-out loss 3.67.

    pip install torch transformers tokenizers safetensors
    apt-get install fortunes
    python3 tools/train-demo.py                     # writes examples/demo
    python3 tools/train-demo.py --ref-only          # only re-record the reference
"""
import argparse
import json
import math
import os
import random
import sys
import time

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOT, IM_START, IM_END = 0, 1, 2

# ChatML, as Qwen writes it, without a default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A share of the fortunes is put in chat form, answering one of these, so
# that `mpk-run --chat` gets answers of a sort.
CHAT_ASKS = [
    "Tell me a fortune.",
    "Say something wise.",
    "Tell me something funny.",
    "Give me a quote.",
    "What do you know?",
    "Any advice?",
    "Tell me a joke.",
    "What is the meaning of life?",
]

SKIP = {"ascii-art", "translate-me"}

# The prompts whose greedy continuations are recorded for the parity test:
# the first REF_KEEP of them whose continuation runs at least REF_MIN
# tokens before a near-tie (a step whose top two logits are within
# MIN_MARGIN, where rounding may pick either), cut before it.
REF_PROMPTS = ["The meaning of life is", "A computer", "Love is", "The best way to", "Never", "If you",
               "Money", "In the beginning", "A programmer", "Life"]
REF_STEPS, REF_MIN, REF_KEEP, MIN_MARGIN = 48, 12, 3, 0.05


def read_fortunes(root):
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if "." in name or name in SKIP or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        for chunk in data.split(b"\n%\n"):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError:
                continue
            text = "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()
            if text and text != "%" and len(text) < 2000:
                out.append(text)
    return sorted(set(out))


def train_tokenizer(texts, vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Every text starts with <|endoftext|>, as every fortune did in training.
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B", special_tokens=[("<|endoftext|>", EOT)]
    )
    assert [tok.token_to_id(s) for s in SPECIALS] == [EOT, IM_START, IM_END]
    return tok


def model_config(args, vocab):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.inter,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=args.seq,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=EOT,
        eos_token_id=[EOT, IM_END],
        pad_token_id=None,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        dtype="bfloat16",
    )


def stream(tok, texts, seed):
    """All the texts as one stream of ids, each after <|endoftext|>; a share
    of them as a one-turn ChatML conversation."""
    rng = random.Random(seed)
    ids = []
    for t in texts:
        if rng.random() < 0.15:
            ask = rng.choice(CHAT_ASKS)
            t = f"<|im_start|>user\n{ask}<|im_end|>\n<|im_start|>assistant\n{t}<|im_end|>\n"
        ids.extend(tok.encode(t).ids)  # the post-processor puts <|endoftext|> first
    return ids


def save_checkpoint(out, model, tok, cfg):
    import torch
    from transformers import GenerationConfig

    os.makedirs(out, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=EOT,
        eos_token_id=[EOT, IM_END],
        do_sample=True,
        temperature=0.8,
        top_k=40,
        top_p=0.95,
        max_new_tokens=128,
    ).save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    # Written by hand: transformers 5 would put the template in a
    # chat_template.jinja beside it, and mpk reads tokenizer_config.json.
    tc = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": None,
        "pad_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.max_position_embeddings,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for i, s in enumerate(SPECIALS)
        },
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
        f.write("\n")
    for extra in ("chat_template.jinja", "special_tokens_map.json"):
        p = os.path.join(out, extra)
        if os.path.exists(p):
            os.remove(p)


def record_reference(ckpt, ref, steps):
    """HF's greedy tokens from the saved checkpoint, in float32 (the bf16
    weights upcast), as the parity test compares them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokz = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    os.makedirs(ref, exist_ok=True)
    cases = []
    for prompt in REF_PROMPTS:
        if len(cases) == REF_KEEP:
            break
        i = len(cases)
        enc = tokz(prompt, return_tensors="pt")
        ids = enc.input_ids
        with torch.no_grad():
            g = model.generate(ids, attention_mask=enc.attention_mask, do_sample=False, max_new_tokens=steps,
                               output_logits=True, return_dict_in_generate=True, pad_token_id=EOT)
        new = g.sequences[0, ids.shape[1]:].tolist()  # up to an EOS id, where generate stops
        margins = []
        for s in g.logits:
            top = torch.topk(s[0].float(), 2).values
            margins.append(float(top[0] - top[1]))
        cut = next((k for k, m in enumerate(margins) if m < MIN_MARGIN), len(new))
        if cut < min(REF_MIN, len(new)):
            print(f"reference: {prompt!r}: a near-tie at step {cut}; not used", flush=True)
            continue
        new, margins = new[:cut], margins[:cut]
        text = tokz.decode(new, skip_special_tokens=False)
        base = os.path.join(ref, f"p{i}")
        with open(base + ".txt", "w") as f:
            f.write(prompt)
        with open(base + ".prompt.ids", "w") as f:
            f.write(",".join(map(str, ids[0].tolist())) + "\n")
        with open(base + ".generated.ids", "w") as f:
            f.write(" ".join(map(str, new)) + "\n")
        # float32 little-endian [vocab]: the logits at the last prompt position
        g.logits[0][0].float().numpy().astype("<f4").tofile(base + ".last_logits.f32")
        cases.append({"prompt": prompt, "prompt_ids": ids[0].tolist(), "generated": new, "text": text,
                      "min_margin": min(margins), "margins": [round(m, 4) for m in margins]})
        print(f"reference {i}: {prompt!r} -> {text!r} ({len(new)} tokens, min margin {min(margins):.3f})",
              flush=True)
    # The conversations of tests/data/tok-chat, as apply_chat_template renders
    # and tokenizes them with this tokenizer's ChatML template.
    chats = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tok-chat")
    for name in sorted(os.listdir(chats)) if os.path.isdir(chats) else []:
        if name.endswith(".json"):
            with open(os.path.join(chats, name)) as f:
                conv = json.load(f)
            r = tokz.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)
            r = r if isinstance(r, list) else r["input_ids"]
            with open(os.path.join(ref, "chat-" + name[:-5] + ".ids"), "w") as f:
                f.write(" ".join(map(str, r)) + "\n")
    import transformers
    with open(os.path.join(ref, "reference.json"), "w") as f:
        json.dump({"checkpoint": ckpt, "transformers": transformers.__version__, "torch": torch.__version__,
                   "dtype_compute": "float32", "steps": steps, "cases": cases}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="examples/demo", help="the checkpoint directory (default %(default)s)")
    ap.add_argument("--ref", default="tests/data/demo-ref", help="where the HF reference goes (default %(default)s)")
    ap.add_argument("--ref-only", action="store_true", help="only record the reference from OUT")
    ap.add_argument("--fortunes", default="/usr/share/games/fortunes")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--seq", type=int, default=256, help="training sequence length = max_position_embeddings")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    args = ap.parse_args()
    ref = args.ref

    import torch
    from transformers import LlamaForCausalLM

    if args.ref_only:
        record_reference(args.out, ref, REF_STEPS)
        return
    if not os.path.isdir(args.fortunes):
        sys.exit(f"train-demo: {args.fortunes}: not there (apt-get install fortunes)")
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()

    texts = read_fortunes(args.fortunes)
    random.Random(args.seed).shuffle(texts)
    nval = max(1, len(texts) // 50)
    val_texts, train_texts = texts[:nval], texts[nval:]
    print(f"{len(texts)} fortunes, {sum(map(len, texts))} characters; {nval} held out", flush=True)
    tok = train_tokenizer(train_texts, args.vocab)
    vocab = tok.get_vocab_size()
    train_ids = torch.tensor(stream(tok, train_texts, args.seed), dtype=torch.long)
    val_ids = torch.tensor(stream(tok, val_texts, args.seed + 1), dtype=torch.long)
    print(f"tokenizer: vocab {vocab}; {len(train_ids)} training tokens, {len(val_ids)} held out "
          f"({sum(map(len, train_texts)) / len(train_ids):.2f} characters a token)", flush=True)

    cfg = model_config(args, vocab)
    model = LlamaForCausalLM(cfg).to(dev)
    model.config.use_cache = False
    nparam = sum(p.numel() for p in model.parameters())
    print(f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} kv heads "
          f"(head_dim {cfg.head_dim}), intermediate {args.inter}, vocab {vocab}, tied: {nparam} parameters; "
          f"on {dev}, {torch.get_num_threads()} threads", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    warm = max(1, args.steps // 20)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        p = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    gen = torch.Generator().manual_seed(args.seed)
    L = args.seq

    def batch(ids, n, g):
        starts = torch.randint(0, len(ids) - L - 1, (n,), generator=g)
        x = torch.stack([ids[s:s + L + 1] for s in starts.tolist()])
        return x.to(dev)

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev == "cuda" else torch.autocast("cpu", enabled=False)

    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(args.seed + 7)
        tot = 0.0
        with torch.no_grad(), amp:
            for _ in range(8):
                x = batch(val_ids, args.batch, g)
                tot += float(lm_loss(x))
        model.train()
        return tot / 8

    def lm_loss(x):
        logits = model(input_ids=x[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    model.train()
    t1 = time.time()
    ema = None
    for step in range(args.steps):
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step)
        x = batch(train_ids, args.batch, gen)
        with amp:
            loss = lm_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        v = float(loss.detach())
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t1
            tps = (step + 1) * args.batch * L / el
            eta = el / (step + 1) * (args.steps - step - 1)
            print(f"step {step:5d}/{args.steps}  loss {v:.3f} (avg {ema:.3f})  lr {lr_at(step):.2e}  "
                  f"{tps:.0f} tok/s  {el:.0f}s, {eta:.0f}s to go", flush=True)
        if step > 0 and step % 500 == 0:
            print(f"held-out loss {evaluate():.3f}", flush=True)
    train_s = time.time() - t1
    vl = evaluate()
    print(f"trained {args.steps} steps ({args.steps * args.batch * L} tokens, "
          f"{args.steps * args.batch * L / len(train_ids):.1f} epochs) in {train_s:.0f}s; "
          f"final training loss (avg) {ema:.3f}, held-out loss {vl:.3f}", flush=True)

    model.config.use_cache = True
    save_checkpoint(args.out, model.cpu(), tok, cfg)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"saved {args.out}: {sorted(os.listdir(args.out))}, {size} bytes", flush=True)

    # What it writes, sampled as generation_config.json says, from the saved files.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokz = AutoTokenizer.from_pretrained(args.out)
    m = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    torch.manual_seed(args.seed)
    for prompt in ["The", "Life is", "A programmer"]:
        enc = tokz(prompt, return_tensors="pt")
        with torch.no_grad():
            g = m.generate(**enc, max_new_tokens=64, pad_token_id=EOT)
        print(f"sample: {tokz.decode(g[0], skip_special_tokens=True)!r}", flush=True)
    record_reference(args.out, ref, REF_STEPS)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
