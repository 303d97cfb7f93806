"""Which memory layout of ``x @ W`` this CPU's BLAS runs fastest, at the shapes generation uses.

    python benchmarks/bench_matmul_layout.py [--repeats 7]

For each (rows, d_in, d_out): ``x @ W`` with W stored [d_in, d_out] (TL's layout, "x@W"),
``F.linear(x, W_t)`` with W_t stored [d_out, d_in] (nn.Linear / HF, "linear"), and the weight-first
product ``(W_t @ x^T)^T`` made contiguous ("weight-first", what ``probe_lens.models.compat`` uses for
2-128 rows in no-grad CPU forwards). Rows are interleaved per repeat; the best time of each is kept.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from probe_lens.models.compat import weight_first_matmul

SHAPES = {  # Gemma-3-270M: d_model 640, d_mlp 2048, vocab 262,144
    "unembed 640->262144": (640, 262144),
    "mlp in/gate 640->2048": (640, 2048),
    "mlp out 2048->640": (2048, 640),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 16, 64, 128, 256, 1024])
    args = ap.parse_args()
    torch.manual_seed(0)
    rows_out = []
    with torch.no_grad():
        for name, (d_in, d_out) in SHAPES.items():
            w = torch.randn(d_in, d_out)
            w_t = w.T.contiguous()
            for rows in args.rows:
                x = torch.randn(rows, d_in)
                fns = {
                    "x@W": lambda: x @ w,
                    "linear": lambda: F.linear(x, w_t),
                    "weight-first": lambda: weight_first_matmul(x, w_t),
                }
                reps = args.repeats if d_out * rows < 2**26 else max(2, args.repeats // 3)
                best = {k: float("inf") for k in fns}
                for fn in fns.values():
                    fn()  # warm-up
                for _ in range(reps):
                    for k, fn in fns.items():
                        t0 = time.perf_counter()
                        fn()
                        best[k] = min(best[k], time.perf_counter() - t0)
                row = {"shape": name, "rows": rows, **{f"{k}_ms": 1e3 * v for k, v in best.items()}}
                row["x@W / weight-first"] = best["x@W"] / best["weight-first"]
                rows_out.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"torch_threads": torch.get_num_threads(), "results": rows_out}))


if __name__ == "__main__":
    main()
