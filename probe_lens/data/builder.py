"""From prompts to a labelled activation set: sample, score, label, pool, balance, split, save.

This is the paper's data pipeline: the model's *own* continuations of prompts, labelled toxic or
not (in general: the behaviour present or not) by an output classifier, with activations mean-pooled
over the response tokens. Work is saved
chunk by chunk, so an interrupted build resumes where it stopped and gives the same dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from probe_lens._common import metric_word, resid_post_hook
from probe_lens._io import atomic_write, sha256_file
from probe_lens.activations import collect, resolve_hooks
from probe_lens.activations.pooling import POOLINGS
from probe_lens.data.prompts import Prompt
from probe_lens.data.reference import ReferenceMismatch, ReferenceSet, reference_mismatch, row_seed
from probe_lens.models import LensModel
from probe_lens.models.fast_sampling import sampler_id
from probe_lens.models.generation import Generation, generate, tokenize_pairs, tokenizer_of
from probe_lens.scorers.base import Scorer, ScorerOutputError, ScorerUnavailableError, check_scores, label, scorer_name

FORMAT_VERSION = 1

DEFAULT_CLASSES = {"name": "toxicity", "positive_label": "toxic", "negative_label": "clean"}
"""``meta["behaviour"]`` of a dataset built for no behaviour (and read for one saved before behaviours): the
paper's toxicity (``probe_lens.behaviours.TOXICITY`` names the same)."""

__all__ = [
    "DEFAULT_CLASSES",
    "ActivationDataset",
    "BuildConfig",
    "ScorerOutputError",
    "build_dataset",
    "class_record",
    "dataset_from_labelled",
    "dataset_from_reference",
]


@dataclasses.dataclass
class BuildConfig:
    """How to turn prompts into a labelled activation set (saved as ``meta.json`` beside the data)."""

    hooks: list[str | int] = dataclasses.field(default_factory=lambda: [6, 9, 12])
    """Hook points to pool (int L = ``blocks.L.hook_resid_post``)."""
    pooling: str = "mean"
    """Pooling over the response tokens: mean (the paper), last or max."""
    samples_per_prompt: int = 4
    """Continuations sampled per prompt per round."""
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    threshold: float | None = None
    """A response is positive (toxic) when the scorer's P >= threshold; None: 0.5 (a study sets its
    behaviour's threshold)."""
    balance: bool = True
    """Downsample the majority class to the minority's size (the paper balances classes)."""
    min_minority: int = 300
    """Keep sampling extra rounds until the minority class has this many examples..."""
    max_rounds: int = 4
    """...or this many rounds have run (the budget). Round 0 covers every prompt. On the embedded
    Gemma-3-270M with the embedded probe-fit prompts and alt-profanity-check, 3 rounds gave 258 toxic
    examples and 4 rounds over 300 (benchmarks/RESULTS.md)."""
    test_fraction: float = 0.3
    """Share of *prompts* whose examples go to the test split (split by prompt: no leakage)."""
    batch_size: int = 16
    chunk_prompts: int = 32
    """Prompts per saved chunk: the unit of resumption."""
    seed: int = 0
    fast_sampling: bool = True
    """Sample with ``generate(..., fast=True)`` (fp16-weight products on CPU, one prefill per prompt)."""

    def __post_init__(self) -> None:
        if isinstance(self.hooks, (str, int)):
            self.hooks = [self.hooks]
        self.hooks = list(self.hooks)
        if not self.hooks:
            raise ValueError("BuildConfig.hooks is empty; name at least one hook or layer")
        if self.pooling not in POOLINGS:
            raise ValueError(f"BuildConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"BuildConfig.threshold must be strictly between 0 and 1 or null, got {self.threshold}")
        if not 0.0 <= float(self.test_fraction) < 1.0:
            raise ValueError(f"BuildConfig.test_fraction must be in [0, 1), got {self.test_fraction}")
        for name in ("samples_per_prompt", "max_new_tokens", "max_rounds", "batch_size", "chunk_prompts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BuildConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_minority < 0:
            raise ValueError(f"BuildConfig.min_minority must be >= 0, got {self.min_minority}")
        t, p = self.temperature, self.top_p
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:  # NaN fails too
            raise ValueError(f"BuildConfig.temperature must be a number > 0, got {t!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"BuildConfig.top_p must be a number in (0, 1], got {p!r}")

    @property
    def decision_threshold(self) -> float:
        """``threshold``, or 0.5 when it is None."""
        return 0.5 if self.threshold is None else float(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ActivationDataset:
    """Pooled activations with their labels, texts and scores.

    ``acts[hook]`` is ``[n, d_model]``; ``examples`` has one row per example (prompt_id, prompt,
    tag, response, score, label, round, split, balanced); ``generation`` holds the token grid so
    the same sequences can be re-run through a changed model (drift telemetry).
    """

    acts: dict[str, torch.Tensor]
    examples: pd.DataFrame
    generation: Generation
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def _rows(self, split: str | None) -> np.ndarray:
        ex = self.examples
        keep = ex["balanced"].to_numpy() if self.meta.get("config", {}).get("balance", True) else np.ones(len(ex), bool)
        if split is not None:
            if split not in ("train", "test"):
                raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
            keep = keep & (ex["split"].to_numpy() == split)
        return np.flatnonzero(keep)

    def X(self, hook: str | int, split: str | None = None) -> np.ndarray:
        """Activations ``[n, d_model]`` (float32) of the balanced examples in ``split``."""
        name = self._hook_name(hook)
        return self.acts[name][torch.as_tensor(self._rows(split))].numpy()

    def y(self, split: str | None = None) -> np.ndarray:
        """Labels (1 = toxic) of the balanced examples in ``split``."""
        return self.examples["label"].to_numpy()[self._rows(split)].astype(np.int64)

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row indices of the balanced examples in ``split`` (into ``examples``/``generation``)."""
        return self._rows(split)

    def _hook_name(self, hook: str | int) -> str:
        if isinstance(hook, int):
            hook = resid_post_hook(hook)
        if hook not in self.acts:
            raise KeyError(f"hook {hook!r} was not collected; this dataset has {self.hooks}")
        return hook

    def counts(self) -> dict[str, int]:
        """``n_examples``, ``n_<positive class>``, ``n_<negative class>`` (``n_toxic``, ``n_clean`` for
        toxicity: the behaviour in ``meta["behaviour"]``), ``n_balanced``."""
        ex = self.examples
        pos, neg = _count_keys(self.meta.get("behaviour"))
        return {
            "n_examples": int(len(ex)),
            pos: int(ex["label"].sum()),
            neg: int((ex["label"] == 0).sum()),
            "n_balanced": int(ex["balanced"].sum()),
        }

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``activations.safetensors``, ``examples.parquet``, ``meta.json`` (atomically, meta last)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"acts/{h}": a.contiguous() for h, a in self.acts.items()}
        tensors.update({f"gen/{k}": v for k, v in self.generation.state_dict().items()})
        atomic_write(path / "activations.safetensors", lambda p: save_file(tensors, str(p)))
        atomic_write(path / "examples.parquet", lambda p: self.examples.to_parquet(p, index=False))
        meta = dict(self.meta, format_version=FORMAT_VERSION, prompt_len=self.generation.prompt_len)
        atomic_write(path / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActivationDataset:
        """Reload a dataset written by :meth:`save` (no recomputation)."""
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(
                f"{path} holds no finished dataset (no meta.json); build it with build_dataset(..., out_dir={str(path)!r})"
            )
        file = path / "meta.json"
        try:
            meta = json.loads(file.read_text())
            if not isinstance(meta, dict):
                raise ValueError(f"it holds a JSON {type(meta).__name__}")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"dataset format {meta.get('format_version')}, this probe_lens reads {FORMAT_VERSION}")
            file = path / "activations.safetensors"
            tensors = load_file(str(file))
            file = path / "examples.parquet"
            examples = pd.read_parquet(file)
            file = path / "activations.safetensors"
            acts = {k[len("acts/") :]: v for k, v in tensors.items() if k.startswith("acts/")}
            acts = {h: acts[h] for h in meta["hooks"]}
            gen = _saved_generation(examples, tensors, meta["prompt_len"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:  # json errors are ValueErrors
            raise ValueError(
                f"{file} cannot be read ({type(e).__name__}: {e}): the dataset in {path} is truncated or corrupt; "
                f"delete {path} and rerun (a study: the same step, or reproduce with --resume) to build it again"
            ) from e
        return cls(acts=acts, examples=examples, generation=gen, meta=meta)


def class_record(behaviour: Any = None) -> dict[str, str]:
    """``meta["behaviour"]``: the name and class names of ``behaviour``.

    ``behaviour``: a :class:`~probe_lens.behaviours.Behaviour` (or anything with ``name``, ``positive_label``
    and ``negative_label``, e.g. ``BehaviourNames``), its ``describe()`` record, or None (:data:`DEFAULT_CLASSES`).
    """
    if behaviour is None:
        return dict(DEFAULT_CLASSES)
    if isinstance(behaviour, str):
        raise TypeError(f"pass the behaviour itself (probe_lens.behaviours.get_behaviour({behaviour!r})), not its name")
    get = behaviour.get if isinstance(behaviour, Mapping) else lambda k: getattr(behaviour, k, None)
    record = {k: get(k) for k in DEFAULT_CLASSES}
    missing = [k for k, v in record.items() if not isinstance(v, str) or not v]
    if missing:
        raise TypeError(f"a behaviour names {list(DEFAULT_CLASSES)}; {type(behaviour).__name__} lacks {missing}")
    return {k: str(v) for k, v in record.items()}


def _count_keys(record: dict[str, str] | None) -> tuple[str, str]:
    """The count keys of the two classes, ``("n_toxic", "n_clean")`` for toxicity (and for a dataset built
    before behaviours, which records none)."""
    names = {**DEFAULT_CLASSES, **(record or {})}
    return f"n_{metric_word(names['positive_label'])}", f"n_{metric_word(names['negative_label'])}"


def _inputs(
    model: LensModel, prompts: Sequence[Prompt | str], config: BuildConfig | None
) -> tuple[BuildConfig, list[Prompt], list[str]]:
    """The config (default :class:`BuildConfig`), the prompts as :class:`Prompt` rows, the resolved hooks."""
    cfg = config or BuildConfig()
    return cfg, _as_prompts(prompts), resolve_hooks(model, cfg.hooks)


def _as_prompts(prompts: Sequence[Prompt | str]) -> list[Prompt]:
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list, got a single string; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; pass at least one prompt (e.g. probe_lens.data.load_prompts())")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, Prompt):
            out.append(p)
        elif isinstance(p, str):
            out.append(Prompt(id=f"prompt{i:05d}", text=p, tag="provocative", topic="user"))
        else:
            raise TypeError(f"prompts[{i}] is a {type(p).__name__}; pass Prompt objects or strings")
    return out


def _row_seeds(seed: int, round_: int, prompts: list[Prompt], k: int) -> list[int]:
    """Each sample's own random stream (:func:`~probe_lens.data.reference.row_seed`): round 0 draws the
    rows a reference set built with the same seed holds; later rounds draw new ones."""
    return [row_seed(seed, p.id if round_ == 0 else f"{p.id}#round{round_}", s) for p in prompts for s in range(k)]


def _meta_base(model: LensModel, cfg: BuildConfig, hooks: list[str], prompts: list[Prompt], scorer: dict,
               source: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """What a dataset folder must match to be reused: config, hooks, model, scorer, prompts (and source)."""
    meta = {
        "config": cfg.to_dict(),
        "hooks": hooks,
        "model_name": model.cfg.model_name,
        "d_model": model.cfg.d_model,
        "scorer": scorer,
        "n_prompts": len(prompts),
        "prompt_ids_sha": _ids_digest(prompts),
    }
    return meta if source is None else {**meta, "source": source}


def _pooled(model: LensModel, gen: Generation, hooks: list[str], cfg: BuildConfig, progress: bool) -> dict:
    """Activations at ``hooks`` pooled over each row's response tokens (one teacher-forced pass)."""
    return collect(
        model, gen.tokens, gen.attention_mask, gen.response_mask, hooks,
        pooling=cfg.pooling, batch_size=cfg.batch_size, progress=progress,
    )  # fmt: skip


def _rows_frame(gen: Generation, prompt_ids: list[str], prompt_texts: list[str], tags: list[str], scores: Any,
                samples: Any, **extra: Any) -> pd.DataFrame:  # fmt: skip
    """The examples table: one row per continuation of ``gen`` (``extra`` columns appended in order)."""
    return pd.DataFrame(
        {
            "prompt_id": prompt_ids,
            "prompt": prompt_texts,
            "tag": tags,
            "response": gen.response_texts,
            "n_response_tokens": gen.response_mask.sum(dim=1).numpy(),
            "score": scores,
            "sample": samples,
            **extra,
        }
    )


def _build_chunk(model, prompts: list[Prompt], hooks: list[str], scorer: Scorer, cfg: BuildConfig, round_: int):
    k = cfg.samples_per_prompt
    texts = [p.text for p in prompts for _ in range(k)]
    gen = generate(
        model,
        texts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        row_seeds=_row_seeds(cfg.seed, round_, prompts, k),
        batch_size=cfg.batch_size,
        progress=False,
        fast=cfg.fast_sampling,
    )
    t0 = time.perf_counter()
    who = scorer_name(scorer)
    try:
        raw = scorer.score(gen.response_texts)
    except (ScorerUnavailableError, ScorerOutputError):  # a Scorer's own output check says what is wrong
        raise
    except (RuntimeError, ValueError, TypeError) as e:  # Scorer.score's own output check, or the backend's
        raise ScorerOutputError(f"scorer {who!r} failed: {type(e).__name__}: {e}") from e
    scores = check_scores(raw, gen.response_texts, who)
    t_score = time.perf_counter() - t0
    acts = _pooled(model, gen, hooks, cfg, progress=False)
    rows = _rows_frame(
        gen, [p.id for p in prompts for _ in range(k)], texts, [p.tag for p in prompts for _ in range(k)], scores,
        [s for _ in prompts for s in range(k)], row_seed=_row_seeds(cfg.seed, round_, prompts, k),
    )  # fmt: skip
    return gen, acts, rows, t_score


def _chunk_stamp(meta_base: dict[str, Any], prompts: list[Prompt], seed: int, model: Any) -> dict[str, Any]:
    """What a chunk was built from: model, hooks, sampling config (not the round budget), its prompts, seed,
    and the sampling code (:func:`sampler_id` of ``model``: a bridge samples on its own path)."""
    config = {k: v for k, v in meta_base["config"].items() if k not in _BUDGET_FIELDS}
    return {
        "model_name": meta_base["model_name"],
        "d_model": meta_base["d_model"],
        "hooks": meta_base["hooks"],
        "scorer": meta_base["scorer"].get("name"),
        "config": config,
        "sampler": sampler_id(bool(config.get("fast_sampling", False)), model),
        "prompt_ids_sha": _ids_digest(prompts),
        "seed": seed,
    }


def _save_chunk(folder: Path, name: str, gen: Generation, acts, rows: pd.DataFrame, stamp: dict[str, Any]) -> None:
    tensors = {f"acts/{h}": a.contiguous() for h, a in acts.items()}
    tensors.update({f"gen/{k}": v for k, v in gen.state_dict().items()})
    tensors_sha = None

    def write_tensors(p: Path) -> None:
        nonlocal tensors_sha
        save_file(tensors, str(p))
        tensors_sha = sha256_file(p)

    atomic_write(folder / f"{name}.safetensors", write_tensors)
    payload = {
        "prompt_len": gen.prompt_len,
        "rows": rows.to_dict(orient="list"),
        "stamp": stamp,
        "tensors_sha256": tensors_sha,
    }
    atomic_write(folder / f"{name}.json", lambda p: p.write_text(json.dumps(payload, default=float)))


def _load_chunk(folder: Path, name: str, hooks: list[str], stamp: dict[str, Any], n_rows: int, prompt_ids: list[str]):
    """A saved chunk, or None if there is none. A corrupt or foreign one is named in a warning and
    returned as None (so it is rebuilt), never mixed in."""
    js, st = folder / f"{name}.json", folder / f"{name}.safetensors"
    if not (js.exists() and st.exists()):
        return None
    try:
        return _read_chunk(js, st, hooks, stamp, n_rows, prompt_ids)
    except (ValueError, KeyError, TypeError, OSError, SafetensorError) as e:
        warnings.warn(f"chunk {st.parent / name}.* cannot be used ({e}); rebuilding it", RuntimeWarning, stacklevel=3)
        return None


def _read_chunk(js: Path, st: Path, hooks: list[str], stamp: dict[str, Any], n_rows: int, prompt_ids: list[str]):
    payload = json.loads(js.read_text())
    saved = payload.get("stamp")
    if saved is not None and not _same_json(saved, stamp):
        diff = sorted(k for k in set(saved) | set(stamp) if not _same_json(saved.get(k), stamp.get(k)))
        raise ValueError(f"it was built with other settings ({', '.join(diff)})")
    if payload.get("tensors_sha256") and sha256_file(st) != payload["tensors_sha256"]:
        raise ValueError(f"{st.name} does not match the checksum in {js.name} (truncated or corrupt)")
    t = load_file(str(st))
    rows = pd.DataFrame(payload["rows"])
    if rows["prompt_id"].tolist() != prompt_ids:
        found = sorted(set(rows["prompt_id"].tolist()))
        raise ValueError(
            f"its rows are for other prompts (e.g. {found[:3]}) than this chunk's (e.g. {sorted(set(prompt_ids))[:3]})"
        )
    score = rows["score"].to_numpy(dtype=np.float64)
    if not (np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all()):
        raise ValueError("its scores are NaN or outside [0, 1]")
    for h in hooks:
        a = t.get(f"acts/{h}")
        if a is None or a.shape[0] != n_rows or a.shape[1] != stamp["d_model"]:
            raise ValueError(
                f"its activations for {h} are missing or shaped {None if a is None else tuple(a.shape)}, "
                f"not ({n_rows}, {stamp['d_model']})"
            )
    if t["gen/tokens"].shape[0] != n_rows:
        raise ValueError(f"it holds {t['gen/tokens'].shape[0]} sequences, not {n_rows}")
    return _saved_generation(rows, t, payload["prompt_len"]), {h: t[f"acts/{h}"] for h in hooks}, rows


def _saved_generation(rows: pd.DataFrame, tensors: dict[str, torch.Tensor], prompt_len: Any) -> Generation:
    """The :class:`Generation` saved as ``gen/*`` tensors, with the prompt and response texts of ``rows``."""
    return Generation(
        prompts=rows["prompt"].tolist(),
        tokens=tensors["gen/tokens"],
        attention_mask=tensors["gen/attention_mask"],
        response_mask=tensors["gen/response_mask"],
        prompt_len=int(prompt_len),
        response_texts=rows["response"].tolist(),
    )


def build_dataset(
    model: LensModel,
    prompts: Sequence[Prompt | str],
    scorer: Scorer,
    config: BuildConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    behaviour: Any = None,
) -> ActivationDataset:
    """Sample, score, label, pool, balance and split; save under ``out_dir`` and resume from it.

    ``behaviour`` (a :class:`~probe_lens.behaviours.Behaviour` or registered name; None: toxicity) names
    the classes in ``meta`` and :meth:`ActivationDataset.counts`; ``scorer`` labels the responses.

    With ``out_dir`` a finished dataset there is simply loaded (no recomputation; the config must
    match), and an interrupted build continues from its saved chunks. Extra sampling rounds (over the
    provocative prompts) run while the minority class is short of ``config.min_minority``, up to
    ``config.max_rounds``; what was reached is recorded in ``meta["shortfall"]``. Calling again with
    only a larger budget (``max_rounds``, ``min_minority``) grows a finished dataset: saved rounds are
    reused and only the new ones sampled.
    """
    cfg, prompts, hooks = _inputs(model, prompts, config)
    meta_base = _meta_base(model, cfg, hooks, prompts, scorer.describe())
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "meta.json").exists():
            ds = ActivationDataset.load(folder)
            _check_same_study(ds.meta, meta_base, folder)
            if _same_json(ds.meta["config"], meta_base["config"]):
                return ds
            # only the sampling budget changed: re-finish from the saved chunks, sampling new rounds only
            # (meta.json goes first, so a crash leaves an unfinished build that resumes, not a mixed one)
            (folder / "meta.json").unlink()
        spec = folder / "build_spec.json"
        if spec.exists():
            _check_same_study(json.loads(spec.read_text()), meta_base, folder)
        atomic_write(spec, lambda p: p.write_text(json.dumps(meta_base, indent=2, default=str)))
        (folder / "chunks").mkdir(exist_ok=True)

    gens: list[Generation] = []
    acts_parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    frames: list[pd.DataFrame] = []
    timings = {"generate_collect_s": 0.0, "score_s": 0.0}
    positive = class_record(behaviour)["positive_label"]
    round_pool = prompts
    n_done = 0
    for round_ in range(cfg.max_rounds):
        if round_ > 0:
            labels_so_far = label(pd.concat(frames)["score"].to_numpy(), cfg.decision_threshold)
            minority = int(min(labels_so_far.sum(), (1 - labels_so_far).sum()))
            if minority >= cfg.min_minority:
                break
            round_pool = [p for p in prompts if p.tag == "provocative"] or prompts
        chunks = [round_pool[i : i + cfg.chunk_prompts] for i in range(0, len(round_pool), cfg.chunk_prompts)]
        bar = tqdm(chunks, desc=f"build dataset (round {round_ + 1}/{cfg.max_rounds})", disable=not progress)
        for c, chunk in enumerate(bar):
            name = f"r{round_:02d}_c{c:04d}"
            seed = cfg.seed * 1_000 + round_  # recorded in the chunk stamp; each row draws from its own seed
            stamp = _chunk_stamp(meta_base, chunk, seed, model)
            ids = [p.id for p in chunk for _ in range(cfg.samples_per_prompt)]
            loaded = _load_chunk(folder / "chunks", name, hooks, stamp, len(ids), ids) if folder is not None else None
            if loaded is None:
                t0 = time.perf_counter()
                try:
                    gen, acts, rows, t_score = _build_chunk(model, chunk, hooks, scorer, cfg, round_)
                except ScorerOutputError as e:
                    kept = (
                        f"; the {n_done} finished chunk(s) are kept in {folder / 'chunks'}"
                        if folder is not None
                        else ""
                    )
                    raise ScorerOutputError(
                        f"{e}. The build stopped at chunk {name}{kept}: fix the scorer and call build_dataset again "
                        "with the same out_dir to continue"
                    ) from e
                timings["generate_collect_s"] += time.perf_counter() - t0 - t_score
                timings["score_s"] += t_score
                if folder is not None:
                    _save_chunk(folder / "chunks", name, gen, acts, rows, stamp)
            else:
                gen, acts, rows = loaded
            n_done += 1
            rows = rows.assign(round=round_)
            gens.append(gen)
            frames.append(rows)
            for h in hooks:
                acts_parts[h].append(acts[h])
            n_pos = int(label(pd.concat(frames)["score"].to_numpy(), cfg.decision_threshold).sum())
            bar.set_postfix({positive: n_pos, "total": sum(len(f) for f in frames)})

    return _assemble(
        model, pd.concat(frames, ignore_index=True), gens, acts_parts, cfg, meta_base, timings, folder, behaviour
    )


def _assemble(
    model: LensModel,
    examples: pd.DataFrame,
    gens: list[Generation],
    acts_parts: dict[str, list[torch.Tensor]],
    cfg: BuildConfig,
    meta_base: dict[str, Any],
    timings: dict[str, float],
    folder: Path | None,
    behaviour: Any = None,
) -> ActivationDataset:
    """Label, balance, split and save the finished rows (shared by sampling, reference and labelled builds)."""
    examples["label"] = label(examples["score"].to_numpy(), cfg.decision_threshold)
    rng = np.random.default_rng(cfg.seed)
    examples["balanced"] = _balance_mask(examples["label"].to_numpy(), rng) if cfg.balance else True
    examples["split"] = _split_by_prompt(examples["prompt_id"].to_numpy(), cfg.test_fraction, rng)
    record = class_record(behaviour)
    pos, neg = _count_keys(record)
    counts = {
        "n_examples": int(len(examples)),
        pos: int(examples["label"].sum()),
        neg: int((examples["label"] == 0).sum()),
        "n_balanced": int(examples["balanced"].sum()),
        "rounds": int(examples["round"].max()) + 1,
    }
    minority = min(counts[pos], counts[neg])
    meta = dict(
        meta_base,
        behaviour=record,
        counts=counts,
        timings=timings,
        shortfall=(
            None
            if minority >= cfg.min_minority
            else f"minority class has {minority} examples after {counts['rounds']} round(s), "
            f"short of min_minority={cfg.min_minority}; raise max_rounds or samples_per_prompt"
        ),
    )
    pad_id = tokenizer_of(model).pad_token_id
    ds = ActivationDataset(
        acts={h: torch.cat(v) for h, v in acts_parts.items()},
        examples=examples,
        generation=Generation.concat(gens, pad_id),
        meta=meta,
    )
    if meta["shortfall"]:
        warnings.warn(meta["shortfall"], stacklevel=3)
    if folder is not None:
        ds.save(folder)
        ds.meta = json.loads((folder / "meta.json").read_text())
    return ds


def dataset_from_reference(
    model: LensModel,
    reference: ReferenceSet,
    prompts: Sequence[Prompt | str],
    scorer: Scorer,
    config: BuildConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    behaviour: Any = None,
) -> ActivationDataset:
    """The activation set :func:`build_dataset` would sample, read from a reference set instead.

    Takes samples ``0..config.samples_per_prompt-1`` of each prompt from ``reference`` and pools their
    activations in one teacher-forced forward pass (no sampling; one round). Scores are the reference's
    when ``scorer`` has the same name, else ``scorer`` re-scores the texts. Raises
    :class:`~probe_lens.data.reference.ReferenceMismatch` when the reference cannot stand in (other model,
    sampling settings or prompts). With ``out_dir`` a finished dataset there is loaded instead.
    """
    cfg, prompts, hooks = _inputs(model, prompts, config)
    why = reference_mismatch(reference, model, prompts, cfg)
    if why is not None:
        raise ReferenceMismatch(f"the reference set cannot replace sampling: {why}")
    who = scorer_name(scorer)
    source = {
        "reference": reference.meta.get("file", "reference"),
        "reference_sha256": reference.meta.get("sha256"),
        "reference_scorer": reference.meta.get("scorer", {}).get("name"),
    }

    def read() -> _GivenRows:
        t0 = time.perf_counter()
        rows = reference.select([p.id for p in prompts], cfg.samples_per_prompt)
        gen = reference.generation(rows, tokenizer_of(model).pad_token_id, model.cfg.d_vocab)
        sub = reference.rows.loc[rows]
        if who == source["reference_scorer"]:
            scores = sub["score"].to_numpy(dtype=np.float64)
        else:
            scores = check_scores(scorer.score(gen.response_texts), gen.response_texts, who)
        tag = {p.id: p.tag for p in prompts}
        ids = sub["prompt_id"].tolist()
        return _GivenRows(gen, ids, [tag[i] for i in ids], scores, sub["sample"].to_numpy(),
                          {"row_seed": sub["row_seed"].to_numpy()}, score_s=time.perf_counter() - t0)  # fmt: skip

    meta_base = _meta_base(model, cfg, hooks, prompts, scorer.describe(), source)
    return _teacher_forced(model, cfg, hooks, meta_base, read, out_dir=out_dir, progress=progress, behaviour=behaviour)


def dataset_from_labelled(
    model: LensModel,
    prompts: Sequence[Prompt | str],
    labelled: Any,
    config: BuildConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    behaviour: Any = None,
) -> ActivationDataset:
    """The activation set of pre-labelled ``(prompt, response, label)`` rows: no sampling, no scorer.

    Every row of ``labelled`` (a :class:`~probe_lens.behaviours.LabelledRows`) whose prompt text is one of
    ``prompts`` is read teacher-forced (one forward pass; activations pooled over its response tokens as
    ``config.pooling`` says) and keeps its label as its score. ``samples_per_prompt``, the sampling
    settings and the round budget of ``config`` do not apply; balancing and the by-prompt split do. With
    ``out_dir`` a finished dataset there is loaded instead.
    """
    cfg, prompts, hooks = _inputs(model, prompts, config)
    by_text = {p.text: p for p in prompts}
    rows = [(by_text[p], r, y) for p, r, y in labelled.rows if p in by_text]
    if not rows:
        raise ValueError(f"none of the {len(prompts)} prompts has a labelled row; the rows come from {labelled.source}")
    empty = [r for _, r, _ in rows if not r.strip()]
    if empty:
        raise ValueError(f"{len(empty)} labelled row(s) have an empty response; a probe reads the response's tokens")

    def read() -> _GivenRows:
        gen = tokenize_pairs(model, [p.text for p, _, _ in rows], [r for _, r, _ in rows])
        _check_row_lengths(model, gen, rows, labelled.source)
        sample: list[int] = []
        seen: Counter[str] = Counter()
        for p, _, _ in rows:  # the k-th labelled response of its prompt
            sample.append(seen[p.id])
            seen[p.id] += 1
        scores = np.array([y for _, _, y in rows], dtype=np.float64)
        return _GivenRows(gen, [p.id for p, _, _ in rows], [p.tag for p, _, _ in rows], scores, sample)

    def same_rows(ds: ActivationDataset, folder: Path) -> None:
        if ds.meta.get("source", {}).get("labelled_version") != labelled.version:
            raise ValueError(
                f"{folder} holds a dataset of other labelled rows; use another out_dir or delete it to rebuild"
            )

    source = {"labelled": labelled.source, "labelled_version": labelled.version}
    meta_base = _meta_base(model, cfg, hooks, prompts, labelled.describe(), source)
    return _teacher_forced(model, cfg, hooks, meta_base, read, out_dir=out_dir, progress=progress,
                           behaviour=behaviour, check_saved=same_rows)  # fmt: skip


MAX_LABELLED_TOKENS = 512
"""Prompt + response tokens of one labelled row: rows are read whole, padded to the longest, in a forward
pass whose memory grows with the square of that length (a study's continuations are tens of tokens)."""


def _check_row_lengths(model: LensModel, gen: Generation, rows: list[tuple[Any, str, Any]], source: str) -> None:
    """Refuse rows longer than :data:`MAX_LABELLED_TOKENS` or the model's context, naming the file and row."""
    limit = min(MAX_LABELLED_TOKENS, int(model.cfg.n_ctx))
    lengths = gen.attention_mask.sum(dim=1).tolist()
    for (p, r, _), n in zip(rows, lengths):
        if n > limit:
            raise ValueError(
                f"{source}: the row with prompt {p.text[:40]!r} and response {r[:40]!r}... is {n} tokens, over the "
                f"limit of {limit} (prompt + response; the model's context is {model.cfg.n_ctx}); shorten it"
            )


@dataclasses.dataclass
class _GivenRows:
    """Rows read, not sampled: their token grid and the columns of the examples table."""

    gen: Generation
    prompt_ids: list[str]
    tags: list[str]
    scores: np.ndarray
    samples: Any
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    score_s: float = 0.0
    """Seconds spent reading and scoring (not pooling)."""


def _teacher_forced(
    model: LensModel,
    cfg: BuildConfig,
    hooks: list[str],
    meta_base: dict[str, Any],
    read: Callable[[], _GivenRows],
    *,
    out_dir: str | Path | None,
    progress: bool,
    behaviour: Any,
    check_saved: Callable[[ActivationDataset, Path], None] | None = None,
) -> ActivationDataset:
    """The path the reference and labelled builds share: reuse a finished ``out_dir``; else ``read()`` the
    rows, pool their activations in one teacher-forced pass, then label, balance, split and save."""
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None and (folder / "meta.json").exists():
        ds = ActivationDataset.load(folder)
        _check_same_study(ds.meta, meta_base, folder)
        if check_saved is not None:
            check_saved(ds, folder)
        return ds
    t0 = time.perf_counter()
    given = read()
    acts = _pooled(model, given.gen, hooks, cfg, progress)
    examples = _rows_frame(given.gen, given.prompt_ids, given.gen.prompts, given.tags, given.scores, given.samples,
                           **given.extra, round=0)  # fmt: skip
    timings = {"forward_s": time.perf_counter() - t0 - given.score_s, "score_s": given.score_s}
    return _assemble(model, examples, [given.gen], {h: [acts[h]] for h in hooks}, cfg, meta_base, timings, folder,
                     behaviour)  # fmt: skip


def _ids_digest(prompts: list[Prompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(f"{p.id}\x00{p.text}\x00".encode())
    return h.hexdigest()[:16]


# BuildConfig fields that only bound how many rounds are sampled: a saved build with a different budget is
# the same dataset cut at another round, so build_dataset grows (or re-cuts) it from its chunks
_BUDGET_FIELDS = ("max_rounds", "min_minority")


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


def _check_same_study(saved: dict, wanted: dict, folder: Path) -> None:
    def without_budget(config: dict | None) -> dict:
        return {k: v for k, v in (config or {}).items() if k not in _BUDGET_FIELDS}

    diff = (
        ["config"] if not _same_json(without_budget(saved.get("config")), without_budget(wanted.get("config"))) else []
    )
    diff += [k for k in ("hooks", "model_name", "prompt_ids_sha") if not _same_json(saved.get(k), wanted.get(k))]
    if saved.get("scorer", {}).get("name") != wanted["scorer"]["name"]:
        diff.append("scorer")
    if diff:
        raise ValueError(
            f"{folder} holds a dataset built with different settings ({', '.join(diff)}); "
            "use another out_dir or delete that folder to rebuild"
        )


def _balance_mask(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros(len(labels), dtype=bool)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n = min(len(pos), len(neg))
    keep[rng.permutation(pos)[:n]] = True
    keep[rng.permutation(neg)[:n]] = True
    return keep


def _split_by_prompt(prompt_ids: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    unique = np.array(sorted(set(prompt_ids.tolist())))
    n_test = int(round(test_fraction * len(unique)))
    test_ids = set(rng.permutation(unique)[:n_test].tolist())
    return np.where(np.isin(prompt_ids, list(test_ids)), "test", "train")
