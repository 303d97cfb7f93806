"""Lexical baselines of the curated sets (issue 23): classifier, lexicon hits, bag of words by topic, length.

Per set (toxicity and sentiment; v1, v2, v2-hard) prints one markdown row of AUROCs and the per-kind
AUROC of the lexicon and the bag of words on v2. The output classifier is the behaviour's scorer:
alt-profanity-check (``profanity``) for toxicity, VADER for sentiment.

    PYTHONPATH=. python benchmarks/bench_yardsticks.py
"""

from __future__ import annotations

import platform
import subprocess

from probe_lens.data.curated import curated_arrays, load_curated
from probe_lens.data.lexical import LEXICONS, auroc_by_kind, bow_oof_scores, curated_baselines, lexicon_hits
from probe_lens.scorers import get_scorer

SCORERS = {"toxicity": "profanity", "sentiment": "vader"}
SETS = ((1, "all", "v1"), (2, "all", "v2"), (2, "hard", "v2-hard"))


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else platform.processor()


def main() -> None:
    print(f"CPU: {_cpu()}\n")
    print("| set | rows (1/0) | classifier | lexicon | bag of words (by topic) | length |")
    print("|---|---|---|---|---|---|")
    for name, scorer_name in SCORERS.items():
        scorer = get_scorer(scorer_name)
        for version, subset, tag in SETS:
            rows = load_curated(name, version=version, subset=subset)
            got = curated_baselines(rows, scorer, lexicon=LEXICONS[name])
            n1 = sum(r.label for r in rows)
            cells = " | ".join(f"{got[k]:.3f}" for k in ("classifier", "lexicon", "bow", "length"))
            print(f"| {name} {tag} ({scorer_name}) | {len(rows)} ({n1}/{len(rows) - n1}) | {cells} |")
    for name in SCORERS:
        rows = load_curated(name, version=2)
        texts, labels = curated_arrays(rows)
        kinds = [r.kind for r in rows]
        lex = auroc_by_kind(lexicon_hits(texts, LEXICONS[name]), labels, kinds)
        bow = auroc_by_kind(bow_oof_scores(texts, labels, [r.topic for r in rows]), labels, kinds)
        print(f"\n{name} v2, per kind (one-label kinds against every row of the other label):")
        print("| kind | rows | lexicon | bag of words |\n|---|---|---|---|")
        for kind in lex:
            print(f"| {kind} | {kinds.count(kind)} | {lex[kind]:.3f} | {bow[kind]:.3f} |")


if __name__ == "__main__":
    main()
