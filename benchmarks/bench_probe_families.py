"""Token-reading probes vs a mean-pooled LogisticProbe where one token carries the label (issue 27).

The task is the test suite's (``tests/unit/probes/test_probe_families.py::one_token_task``): 400 train / 400
held-out sequences of 24..48 Gaussian tokens, d=16; in positives one real token gets 4.5 * e_0.
Prints held-out AUROC and the median fit time of 5 fits per probe.

    PYTHONPATH=. python benchmarks/bench_probe_families.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_probe_families import nan_mean, one_token_task  # noqa: E402  (one definition of the task)

from probe_lens.probes import AttentionProbe, LogisticProbe, MaxPooledLogisticProbe  # noqa: E402


def main() -> None:
    Xtr, ytr = one_token_task(400, seed=0)
    Xte, yte = one_token_task(400, seed=1)
    rows = (
        ("mean-pooled LogisticProbe", LogisticProbe, nan_mean(Xtr), nan_mean(Xte)),
        ("MaxPooledLogisticProbe", MaxPooledLogisticProbe, Xtr, Xte),
        ("AttentionProbe", AttentionProbe, Xtr, Xte),
    )
    print("| probe | held-out AUROC | fit (ms, median of 5) |\n|---|---:|---:|")
    for name, make, train, test in rows:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            probe = make().fit(train, ytr)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {probe.score(test, yte):.3f} | {1000 * np.median(times):.0f} |")


if __name__ == "__main__":
    main()
