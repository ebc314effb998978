#!/usr/bin/env python3
"""real_cmp.py - judge one mpk run on a real-shape model against HF
(tests/run-gpu.sh).

    real_cmp.py REFDIR MPK_LOGITS.f32 NP "MPK IDS" "HF IDS"

REFDIR holds all_logits.f32 (HF in fp32) and bf16_logits.f32 (HF's own
bf16 inference on the same tokens, tools/hf_bf16_logits.py). mpk stores
activations in bf16, so its logits cannot match fp32 more closely than
bf16 allows; the yardstick for each row is HF's bf16 run.

Passes when
  - the ids agree up to a step k where they part (or throughout), and
  - every row compared (0..k) is within relative L2 max(1e-2, 1.25 x HF
    bf16's error at that row) of HF fp32, and
  - at a parting, HF's own gap between its token and mpk's is within 4x
    the RMS logit error of that row (a near-tie at that precision: the
    noise on a difference of two logits is about 1.4x the RMS error).
Prints one line starting PASS or FAIL; exit 0 or 1.
"""
import os
import sys

import numpy as np


def main(a):
    if len(a) != 5:
        print(__doc__.strip())
        return 2
    d, lf, np_, got, want = a[0], a[1], int(a[2]), a[3].split(), a[4].split()
    ref = np.fromfile(os.path.join(d, "all_logits.f32"), dtype=np.float32)
    bf = os.path.join(d, "bf16_logits.f32")
    steps = len(want)
    vocab = ref.size // steps
    ref = ref.reshape(steps, vocab)
    hb = np.fromfile(bf, dtype=np.float32).reshape(-1, vocab) if os.path.exists(bf) else None
    mine = np.fromfile(lf, dtype=np.float32).reshape(-1, vocab)
    k = next((i for i in range(min(len(got), steps)) if got[i] != want[i]), None)
    if k is None and len(got) != steps:
        print("FAIL: mpk made %d ids, HF %d, and they agree as far as both go" % (len(got), steps))
        return 1
    last = k if k is not None else steps - 1
    worst, msgs, ok = None, [], True  # (rel, bound, row) of the row closest to its bound
    for i in range(last + 1):
        m, r = mine[np_ - 1 + i].astype(np.float64), ref[i].astype(np.float64)
        rel = np.linalg.norm(m - r) / np.linalg.norm(r)
        yard = np.linalg.norm(hb[i] - r) / np.linalg.norm(r) if hb is not None and i < len(hb) else float("nan")
        bound = max(1e-2, 1.25 * yard) if yard == yard else 1e-2
        if rel > bound:
            ok = False
            msgs.append("row %d rel L2 %.3e > bound %.3e (HF bf16 %.3e)" % (i, rel, bound, yard))
        if worst is None or rel / bound > worst[0] / worst[1]:
            worst = (rel, bound, i)
    rel0 = np.linalg.norm(mine[np_ - 1] - ref[0]) / np.linalg.norm(ref[0])
    yard0 = np.linalg.norm(hb[0] - ref[0]) / np.linalg.norm(ref[0]) if hb is not None else float("nan")
    how = "row 0 rel L2 %.3e (HF bf16 %.3e); closest to its bound: row %d %.3e of %.3e" % (
        rel0, yard0, worst[2], worst[0], worst[1])
    if k is None:
        head = "%d steps, ids identical" % steps
    else:
        h, g = int(want[k]), int(got[k])
        r = ref[k].astype(np.float64)
        err = np.sqrt(np.mean((mine[np_ - 1 + k] - r) ** 2))
        gap = r[h] - r[g]
        head = "parted at step %d of %d: HF %d, mpk %d; HF's gap %.4f, RMS logit error %.4f" % (k, steps, h, g, gap, err)
        if gap > 4 * err:
            ok = False
            msgs.append("not a near-tie: gap %.4f > 4 x %.4f" % (gap, err))
    print("%s %s; %s%s" % ("PASS" if ok else "FAIL", head, how, "; " + "; ".join(msgs[:4]) if msgs else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
