"""The embedded prompt set (``prompts.jsonl``, CC0, written by the probe_lens authors) and its splits.

Provocative prompts are openers a base LM is likely to continue rudely (cut-off insults, angry
forum replies, rants); neutral prompts are everyday openers on the same topics. Content warning:
see ``LICENSE-prompts.txt``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

TAGS = ("provocative", "neutral")
PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class Prompt:
    """One prompt opener.

    Args:
        id: stable identifier (``"p0001"`` for the embedded set; e.g. ``"civil_comments/train/17"``).
        text: the opener the model continues.
        tag: ``"provocative"`` (likely to draw a toxic continuation) or ``"neutral"``.
        topic: short category (``"drivers"``, ``"cooking"``, ``"civil_comments"``, ...).
    """

    id: str
    text: str
    tag: str
    topic: str

    def __post_init__(self) -> None:
        for name in ("id", "text", "topic"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Prompt.{name} must be a string, got {type(value).__name__}")
        if not self.id:
            raise ValueError("Prompt.id must be non-empty")
        if not self.text.strip():
            raise ValueError(f"Prompt {self.id!r} has empty text")
        if self.tag not in TAGS:
            raise ValueError(f"Prompt {self.id!r} has tag {self.tag!r}; expected one of {TAGS}")

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def _load_embedded() -> tuple[Prompt, ...]:
    raw = resources.files("probe_lens.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return tuple(Prompt(**json.loads(line)) for line in raw.splitlines() if line.strip())


def load_prompts() -> list[Prompt]:
    """The embedded prompt set (about 480 provocative + 250 neutral English openers), in id order."""
    return list(_load_embedded())


def provocative(prompts: Iterable[Prompt]) -> list[Prompt]:
    """The prompts tagged ``"provocative"``."""
    return [p for p in prompts if p.tag == "provocative"]


def neutral(prompts: Iterable[Prompt]) -> list[Prompt]:
    """The prompts tagged ``"neutral"``."""
    return [p for p in prompts if p.tag == "neutral"]


def texts(prompts: Iterable[Prompt]) -> list[str]:
    """Just the texts, for ``generate``."""
    return [p.text for p in prompts]


@dataclass
class PromptSplits:
    """Disjoint splits of a prompt set.

    Attributes:
        probe_fit: prompts whose continuations fit the probes (before any fine-tuning).
        train: prompts used for fine-tuning.
        eval: held-out prompts for evaluation only (``n_eval_provocative`` provocative ones).
        seed: the seed that made the split.
    """

    probe_fit: list[Prompt]
    train: list[Prompt]
    eval: list[Prompt]
    seed: int = 0

    def as_ids(self) -> dict[str, list[str]]:
        """``{"probe_fit": [...ids], "train": [...], "eval": [...]}`` (JSON-ready, for run records)."""
        return {name: [p.id for p in getattr(self, name)] for name in ("probe_fit", "train", "eval")}


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def split_prompts(
    prompts: Sequence[Prompt] | None = None,
    *,
    seed: int = 0,
    n_eval_provocative: int = 100,
    n_eval_neutral: int = 50,
    fit_fraction: float = 0.5,
) -> PromptSplits:
    """Split prompts into disjoint probe-fit / train / eval sets, deterministically given ``seed``.

    Each tag is permuted on its own (``np.random.default_rng(seed)``, after sorting by id, so the
    input order does not matter). ``eval`` takes the first ``n_eval_provocative`` provocative and
    ``n_eval_neutral`` neutral prompts; the rest is divided ``fit_fraction : 1 - fit_fraction``
    between ``probe_fit`` and ``train``, per tag. Within a split, prompts keep id order.

    Args:
        prompts: prompts to split (default: :func:`load_prompts`). Ids must be unique.
        seed: seed of the permutation.
        n_eval_provocative: provocative prompts held out for evaluation (paper: 100).
        n_eval_neutral: neutral prompts held out for evaluation (0 for an all-provocative set,
            e.g. Civil Comments).
        fit_fraction: share of the non-eval prompts of each tag that go to ``probe_fit``, in (0, 1).
    """
    if prompts is None:
        prompts = load_prompts()
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list of Prompt objects, got a string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; pass at least one Prompt (or None for the embedded set)")
    for i, p in enumerate(prompts):
        if not isinstance(p, Prompt):
            raise TypeError(
                f"prompts[{i}] is a {type(p).__name__}, not a Prompt; build Prompt(id, text, tag, topic) objects"
            )
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"prompt ids must be unique; duplicated: {dup}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    n_eval = {
        "provocative": _check_count("n_eval_provocative", n_eval_provocative),
        "neutral": _check_count("n_eval_neutral", n_eval_neutral),
    }
    if not (isinstance(fit_fraction, (int, float)) and 0.0 < float(fit_fraction) < 1.0):
        raise ValueError(f"fit_fraction must be a number in (0, 1), got {fit_fraction!r}")

    rng = np.random.default_rng(int(seed))
    rank = {p.id: k for k, p in enumerate(sorted(prompts, key=lambda p: p.id))}
    parts: dict[str, list[Prompt]] = {"probe_fit": [], "train": [], "eval": []}
    for tag in TAGS:
        group = sorted((p for p in prompts if p.tag == tag), key=lambda p: p.id)
        if not group and n_eval[tag] == 0:
            continue
        rest_needed = 2  # at least one for probe_fit and one for train
        if len(group) < n_eval[tag] + rest_needed:
            raise ValueError(
                f"not enough {tag} prompts: {len(group)} given, but {n_eval[tag]} are held out for eval "
                f"and probe_fit/train need at least one each. Lower n_eval_{tag} or add prompts"
                + (" (use n_eval_neutral=0 for an all-provocative set)" if tag == "neutral" else "")
                + "."
            )
        order = rng.permutation(len(group))
        shuffled = [group[i] for i in order]
        eval_part, rest = shuffled[: n_eval[tag]], shuffled[n_eval[tag] :]
        n_fit = min(max(1, int(round(fit_fraction * len(rest)))), len(rest) - 1)
        parts["eval"] += eval_part
        parts["probe_fit"] += rest[:n_fit]
        parts["train"] += rest[n_fit:]
    for name in parts:
        parts[name].sort(key=lambda p: rank[p.id])
    return PromptSplits(seed=int(seed), **parts)


# ---- stratified partitions -------------------------------------------------------------------------

STRATA_KEYS = ("topic", "tag")


def _checked_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list of Prompt objects, got a string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; pass at least one Prompt (e.g. load_prompts())")
    for i, p in enumerate(prompts):
        if not isinstance(p, Prompt):
            raise TypeError(f"prompts[{i}] is a {type(p).__name__}, not a Prompt")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, k in Counter(ids).items() if k > 1)[:5]
        raise ValueError(f"prompt ids must be unique; duplicated: {dup}")
    return sorted(prompts, key=lambda p: p.id)


def _part_totals(sizes: Mapping[str, int | float], n: int) -> list[int]:
    """Integer size of each named part, plus the left-out remainder as a last entry (sums to ``n``)."""
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(
            "sizes must be a non-empty mapping of part name -> size, e.g. {'probe_fit': 0.4, 'train': 0.6}"
        )
    for name in sizes:
        if not isinstance(name, str) or not name:
            raise TypeError(f"part names must be non-empty strings, got {name!r}")
    values = list(sizes.values())
    is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values]
    is_frac = [isinstance(v, (float, np.floating)) for v in values]
    if not all(a or b for a, b in zip(is_int, is_frac)):
        numbers = (int, float, np.integer, np.floating)
        bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, numbers)}
        raise TypeError(f"sizes must be ints (counts) or floats (fractions); got {bad}")
    negative = {k: v for k, v in sizes.items() if not v >= 0}  # also catches NaN
    if negative:
        raise ValueError(f"sizes must be non-negative; got {negative}")
    if all(is_int):
        counts = [int(v) for v in values]
        if sum(counts) > n:
            raise ValueError(
                f"sizes ask for {sum(counts)} prompts in all ({dict(sizes)}) but only {n} are given; lower the sizes"
            )
        return counts + [n - sum(counts)]
    if not all(is_frac):
        raise TypeError(
            f"sizes mix counts (int) and fractions (float): {dict(sizes)}; use all ints (e.g. 100) or all floats "
            "(e.g. 0.25; write 0.0, not 0)"
        )
    fracs = np.array([float(v) for v in values])
    if not np.isfinite(fracs).all() or fracs.sum() > 1.0 + 1e-9:
        raise ValueError(
            f"fractions in sizes must be finite and sum to at most 1; got {dict(sizes)} (sum {fracs.sum():g})"
        )
    shares = np.append(fracs, max(0.0, 1.0 - fracs.sum())) * n
    return [int(k) for k in _largest_remainder(shares, n)]


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Round ``shares`` (summing to ``total``) to ints with the same sum: the largest remainders round up."""
    base = np.floor(shares + 1e-9).astype(np.int64)
    rest = total - int(base.sum())
    order = np.argsort(-(shares - base), kind="stable")
    base[order[:rest]] += 1
    return base


def _allocate(strata_sizes: np.ndarray, totals: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Integer ``(strata, parts)`` counts with the given row and column sums.

    Lexicographic integer programme: first cover as many ``covered`` cells (>= 1 prompt) as possible,
    then put as few cells as possible outside ``[floor, ceil]`` of the proportional share
    ``m_s * T_p / n``, then get closest to the shares (L1), which rounds up the largest remainders.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, hstack, identity, vstack

    S, C = covered.shape
    n = int(strata_sizes.sum())
    q = np.outer(strata_sizes, totals) / n
    lo, hi = np.floor(q + 1e-9), np.ceil(q - 1e-9)
    nx = S * C
    cov_idx = np.flatnonzero(covered.ravel())
    nz = len(cov_idx)
    # variables: x (nx, int), z (nz, binary), d (nx, |x - q|), e (nx, cells outside [lo, hi])
    nvar = 3 * nx + nz
    eye = identity(nx, format="csr")
    rows_sum = csr_matrix(np.kron(np.eye(S), np.ones((1, C))))
    cols_sum = csr_matrix(np.kron(np.ones((1, S)), np.eye(C)))

    def zero(r: int, c: int) -> csr_matrix:
        return csr_matrix((r, c))

    Z_sel = csr_matrix((np.ones(nz), (np.arange(nz), cov_idx)), shape=(nz, nx))
    A = vstack(
        [
            hstack([rows_sum, zero(S, nz), zero(S, 2 * nx)]),
            hstack([cols_sum, zero(C, nz), zero(C, 2 * nx)]),
            hstack([Z_sel, -identity(nz, format="csr"), zero(nz, 2 * nx)]),  # x >= z
            hstack([eye, zero(nx, nz), -eye, zero(nx, nx)]),  # x - d <= q
            hstack([eye, zero(nx, nz), eye, zero(nx, nx)]),  # x + d >= q
            hstack([eye, zero(nx, nz), zero(nx, nx), -eye]),  # x - e <= hi
            hstack([eye, zero(nx, nz), zero(nx, nx), eye]),  # x + e >= lo
        ]
    ).tocsr()
    inf = np.inf
    lb = np.concatenate(
        [strata_sizes, totals, np.zeros(nz), np.full(nx, -inf), q.ravel(), np.full(nx, -inf), lo.ravel()]
    )
    ub = np.concatenate(
        [strata_sizes, totals, np.full(nz, inf), q.ravel(), np.full(nx, inf), hi.ravel(), np.full(nx, inf)]
    )
    constraints = [LinearConstraint(A, lb, ub)]
    integrality = np.concatenate([np.ones(nx + nz), np.zeros(2 * nx)])
    bounds = Bounds(np.zeros(nvar), np.concatenate([np.repeat(strata_sizes, C), np.ones(nz), np.full(2 * nx, inf)]))
    sel = {"z": slice(nx, nx + nz), "d": slice(nx + nz, 2 * nx + nz), "e": slice(2 * nx + nz, nvar)}
    for name, sign in (("z", -1.0), ("e", 1.0), ("d", 1.0)):
        c = np.zeros(nvar)
        c[sel[name]] = sign
        res = milp(c, constraints=constraints, integrality=integrality, bounds=bounds, options={"mip_rel_gap": 0.0})
        if not res.success:  # pragma: no cover - the plain proportional rounding is always feasible
            raise RuntimeError(f"stratified allocation failed ({res.message}); please report this with your sizes")
        row = np.zeros((1, nvar))
        row[0, sel[name]] = 1.0
        best = float(res.fun) * sign
        constraints.append(
            LinearConstraint(row, best - 1e-6, np.inf) if sign < 0 else LinearConstraint(row, -np.inf, best + 1e-6)
        )
    return np.rint(res.x[:nx]).astype(np.int64).reshape(S, C)


def stratified_partition(
    prompts: Sequence[Prompt],
    sizes: Mapping[str, int | float],
    *,
    seed: int,
    key: str = "topic",
) -> dict[str, list[Prompt]]:
    """Split prompts into disjoint named parts, each stratum (value of ``key``) divided proportionally.

    Args:
        prompts: prompts with unique ids; the input order does not matter (they are sorted by id).
        sizes: part name -> size, all floats (fractions of the prompts, summing to at most 1) or all
            ints (counts, summing to at most ``len(prompts)``); what is not asked for is left out.
            Fractions become counts by largest-remainder rounding (the left-out share included).
        seed: seed of the permutation within each stratum (``np.random.default_rng``).
        key: the stratum attribute, ``"topic"`` or ``"tag"``.

    Returns:
        ``{name: prompts}`` in the order of ``sizes``, each list in id order. Part sizes are exact.
        Within a stratum of ``m`` prompts a part of ``T`` (of ``n``) gets ``floor`` or ``ceil`` of
        ``m T / n`` (largest remainders round up). Every stratum with at least ``len(sizes)`` prompts
        has at least one prompt in every non-empty part, provided the part has at least as many prompts
        as there are such strata (if that needs a share off by more than 1, coverage wins).
    """
    prompts = _checked_prompts(prompts)
    if key not in STRATA_KEYS:
        raise ValueError(f"key must be one of {STRATA_KEYS} (the Prompt attribute to stratify by), got {key!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = len(prompts)
    totals = np.array(_part_totals(sizes, n), dtype=np.int64)
    names = list(sizes)
    strata = sorted({getattr(p, key) for p in prompts})
    groups = [[p for p in prompts if getattr(p, key) == s] for s in strata]
    strata_sizes = np.array([len(g) for g in groups], dtype=np.int64)
    covered = np.zeros((len(strata), len(totals)), dtype=bool)
    covered[np.ix_(strata_sizes >= len(names), totals[:-1] > 0)] = True
    counts = _allocate(strata_sizes, totals, covered)
    rng = np.random.default_rng(int(seed))
    parts: dict[str, list[Prompt]] = {name: [] for name in names}
    for group, row in zip(groups, counts):
        shuffled = [group[i] for i in rng.permutation(len(group))]
        bounds = np.cumsum(row)
        for j, name in enumerate(names):
            parts[name] += shuffled[bounds[j] - row[j] : bounds[j]]
    for name in names:
        parts[name].sort(key=lambda p: p.id)
    return parts


def stratified_sample(prompts: Sequence[Prompt], n: int, *, seed: int, key: str = "topic") -> list[Prompt]:
    """``n`` prompts drawn with every stratum (value of ``key``) represented in proportion, in id order.

    The single part of :func:`stratified_partition` with ``sizes={"sample": n}``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int (the number of prompts to draw), got {n!r}")
    return stratified_partition(prompts, {"sample": int(n)}, seed=seed, key=key)["sample"]
