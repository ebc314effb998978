#!/usr/bin/env python3
"""hf_bf16_logits.py - how far HF transformers' own bf16 inference is from
its fp32 reference, row by row: the yardstick for mpk's logits on real
shapes (tests/run-gpu.sh).

    python3 tools/hf_bf16_logits.py DIR [DIR ...]

DIR is a reference made by tools/hf_reference.py with --all-logits
(config.json, model.safetensors, prompt.ids, generated.ids,
all_logits.f32). The model is loaded with torch_dtype=bfloat16 (weights,
activations and KV cache in bf16, eager attention), fed the prompt and then
the reference's own greedy tokens (teacher forcing, so every row is
comparable), and its logits at the same positions are written to
DIR/bf16_logits.f32 (float32, [steps, vocab]). Prints the relative L2 error
of each row against all_logits.f32.
"""
import json
import os
import sys


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    for d in argv:
        prompt = [int(x) for x in open(os.path.join(d, "prompt.ids")).read().split(",")]
        gen = [int(x) for x in open(os.path.join(d, "generated.ids")).read().split()]
        vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
        ref = np.fromfile(os.path.join(d, "all_logits.f32"), dtype=np.float32).reshape(-1, vocab)
        model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16,
                                                     attn_implementation="eager").to(dev).eval()
        rows = []
        with torch.no_grad():
            ids = torch.tensor([prompt], device=dev)
            out = model(input_ids=ids, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1].float().cpu().numpy())
            for t in gen[: len(ref) - 1]:
                out = model(input_ids=torch.tensor([[t]], device=dev), past_key_values=past, use_cache=True)
                past = out.past_key_values
                rows.append(out.logits[0, -1].float().cpu().numpy())
        got = np.stack(rows).astype(np.float32)
        got.tofile(os.path.join(d, "bf16_logits.f32"))
        rel = [float(np.linalg.norm(got[i] - ref[i]) / np.linalg.norm(ref[i])) for i in range(len(got))]
        print("%s: HF bf16 vs fp32, %d rows: rel L2 row 0 %.3e, median %.3e, max %.3e" %
              (os.path.basename(os.path.normpath(d)), len(rel), rel[0], sorted(rel)[len(rel) // 2], max(rel)),
              flush=True)
        del model, past, out
        if dev == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
