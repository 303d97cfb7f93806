"""Reference continuations: a base model's sampled continuations, shipped as tokens and scores.

Sampling is what starves a study on a CPU. A reference set samples every prompt a study may draw
for probe fitting or on-policy evaluation once, with a recorded seed per row, and stores texts,
token ids and output-classifier scores (no activations: a few MB compressed). A study then gets its
probe pool from one teacher-forced forward pass over those tokens (:func:`dataset_from_reference`)
instead of sampling. The embedded Gemma-3-270M ships one (:data:`SHIPPED_REFERENCE`); build others
with ``probe-lens build-reference``.

File format (``*.jsonl.gz``, no pickle): line 1 is a header ``{"format", "meta", "prompts"}`` where
``prompts`` maps prompt id to ``{"text", "tag", "topic", "ids"}`` (token ids with BOS); every further
line is one row ``{"prompt_id", "sample", "row_seed", "ids", "response", "score"}`` (``ids``: the
response tokens, EOS included when one was sampled). A row regenerates from ``row_seed`` alone
(``generate(..., row_seeds=...)``) up to floating-point differences between machines, which can flip
a near-tie token; the shipped file stays the reference either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from probe_lens._cpu import cpu_info, same_cpu_kind
from probe_lens._io import atomic_write, sha256_file
from probe_lens.data.prompts import Prompt
from probe_lens.models import LensModel
from probe_lens.models.fast_sampling import sampler_id
from probe_lens.models.generation import Generation, generate
from probe_lens.models.sampling import left_pad
from probe_lens.scorers.base import check_scores, scorer_name

FORMAT = 1
SHIPPED_REFERENCE = Path(__file__).parent / "reference" / "gemma-3-270m_provocative.jsonl.gz"
"""The embedded model's reference set (provenance beside it: ``*.provenance.json``)."""


class ReferenceMismatch(ValueError):
    """The reference set cannot stand in for sampling with these settings (the message says why)."""


@dataclasses.dataclass
class ReferenceConfig:
    """How a reference set is sampled (saved in its header)."""

    samples_per_prompt: int = 10
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    """Mixed with each prompt id and sample index into the row's own seed (:func:`row_seed`)."""
    batch_size: int = 64
    chunk_prompts: int = 32
    """Prompts per saved part: the unit of resumption."""
    fast: bool = True
    """Sample with ``generate(..., fast=True)`` (fp16-weight products, shared prefill)."""

    def __post_init__(self) -> None:
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size", "chunk_prompts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ReferenceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"ReferenceConfig needs temperature > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )

    def sampling(self) -> dict[str, Any]:
        """The fields that decide what a row is (not how fast it was made)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
        }


def row_seed(seed: int, prompt_id: str, sample: int) -> int:
    """The random stream of sample ``sample`` of prompt ``prompt_id``: stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclasses.dataclass
class ReferenceSet:
    """Rows of sampled continuations with their scores; ``prompts`` maps id to text, tag, topic, token ids."""

    rows: pd.DataFrame
    prompts: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def config(self) -> ReferenceConfig:
        return ReferenceConfig(**self.meta["config"])

    def counts(self, threshold: float = 0.5) -> dict[str, int]:
        n_tok = self.rows["ids"].map(len).to_numpy()
        return {
            "n_rows": int(len(self.rows)),
            "n_prompts": int(self.rows["prompt_id"].nunique()),
            "n_positive": int((self.rows["score"].to_numpy() >= threshold).sum()),
            "n_full_length": int((n_tok >= self.config.max_new_tokens).sum()),
        }

    def select(self, prompt_ids: Sequence[str], samples_per_prompt: int) -> np.ndarray:
        """Row indices of samples ``0..samples_per_prompt-1`` of each prompt, in prompt order."""
        want = set(prompt_ids)
        sub = self.rows[self.rows["prompt_id"].isin(want) & (self.rows["sample"] < samples_per_prompt)]
        order = {p: i for i, p in enumerate(prompt_ids)}
        sub = sub.assign(_o=sub["prompt_id"].map(order)).sort_values(["_o", "sample"], kind="stable")
        return sub.index.to_numpy()

    def generation(self, rows: Sequence[int] | np.ndarray, pad_id: int, d_vocab: int | None = None) -> Generation:
        """The rows as a :class:`Generation` (prompt left-padded, response right-padded), ready for a forward pass.

        ``d_vocab``: the model's vocabulary size; a token id at or past it is refused (names file and row).
        """
        sub = self.rows.loc[list(rows)]
        p_ids = [self.prompts[p]["ids"] for p in sub["prompt_id"]]
        r_ids = sub["ids"].tolist()
        if d_vocab is not None:
            for where, ids in [
                *zip(sub.index, r_ids),
                *((f"prompt {p}", self.prompts[p]["ids"]) for p in sub["prompt_id"]),
            ]:
                if ids and max(ids) >= d_vocab:
                    raise ValueError(
                        f"reference set {self.meta.get('file', '')}: row {where} holds token id {max(ids)}, but the "
                        f"model's vocabulary has {d_vocab} tokens; the set was built for another model "
                        f"({self.meta.get('model_name')}) or is corrupt: rebuild it with `probe-lens build-reference`"
                    )
        tok, attn = left_pad(p_ids, pad_id)
        r_len = max(1, max(len(r) for r in r_ids))
        resp = torch.full((len(r_ids), r_len), pad_id, dtype=torch.long)
        resp_mask = torch.zeros((len(r_ids), r_len), dtype=torch.long)
        for i, r in enumerate(r_ids):
            resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            resp_mask[i, : len(r)] = 1
        return Generation(
            prompts=[self.prompts[p]["text"] for p in sub["prompt_id"]],
            tokens=torch.cat([tok, resp], dim=1),
            attention_mask=torch.cat([attn, resp_mask], dim=1),
            response_mask=torch.cat([torch.zeros_like(attn), resp_mask], dim=1),
            prompt_len=tok.shape[1],
            response_texts=sub["response"].tolist(),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the gzipped JSONL (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.meta.items() if k not in ("file", "sha256")}  # set by load, not stored
        header = {"format": FORMAT, "meta": meta, "prompts": self.prompts}
        cols = ["prompt_id", "sample", "row_seed", "ids", "response", "score"]

        def write(p: Path) -> None:
            # mtime=0: the same rows give the same bytes
            with open(p, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
                f.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
                for rec in self.rows[cols].to_dict(orient="records"):
                    rec["ids"] = [int(t) for t in rec["ids"]]
                    f.write((json.dumps(rec, separators=(",", ":")) + "\n").encode())

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> ReferenceSet:
        """Read a reference set (default: the shipped one for the embedded model)."""
        path = Path(path) if path is not None else SHIPPED_REFERENCE
        if not path.is_file():
            raise FileNotFoundError(
                f"no reference set at {path}; build one with `probe-lens build-reference --out {path}`"
            )
        try:
            with gzip.open(path, "rt") as f:
                header = json.loads(f.readline())
                recs = [json.loads(line) for line in f if line.strip()]
        except (OSError, EOFError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is not a readable reference set ({e}); rebuild it with `probe-lens build-reference`"
            ) from e
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} has reference format {header.get('format')}, this probe_lens reads {FORMAT}")
        _check_records(path, header, recs)
        rows = pd.DataFrame(recs, columns=["prompt_id", "sample", "row_seed", "ids", "response", "score"])
        meta = dict(header["meta"], file=path.name, sha256=sha256_file(path))
        prov = provenance_path(path)
        if "cpu" not in meta and prov.is_file():  # sets built before the CPU flags were recorded
            with contextlib.suppress(OSError, ValueError, AttributeError):
                recorded = json.loads(prov.read_text())
                if recorded.get("sha256") == meta["sha256"] and isinstance(recorded.get("cpu"), dict):
                    meta["cpu"] = recorded["cpu"]
        return cls(rows=rows, prompts=header["prompts"], meta=meta)

    @property
    def cpu(self) -> dict[str, Any] | None:
        """The CPU the rows were sampled on (``{"model", "vendor", "flags"}``; older sets: the model name only)."""
        if isinstance(self.meta.get("cpu"), dict):
            return self.meta["cpu"]
        return {"model": self.meta["processor"]} if self.meta.get("processor") else None

    def cpu_matches(self) -> bool | None:
        """Whether this machine's CPU is the kind the rows were sampled on (None: not recorded).

        Only on the same kind do the rows regenerate token for token; on another kind a near-tie token
        can flip and the continuation diverge from there (the rows stay the reference either way).
        """
        return same_cpu_kind(self.cpu)


def _check_records(path: Path, header: Any, recs: list[Any]) -> None:
    """Every row a mapping with token ids (ints >= 0, at least one) and a score in [0, 1]; errors name the
    file and the line (line 1 is the header)."""

    def ids_ok(ids: Any) -> bool:
        return isinstance(ids, list) and bool(ids) and all(type(t) is int and t >= 0 for t in ids)

    def bad(line: int, what: str) -> ValueError:
        return ValueError(
            f"{path} line {line}: {what}; the file is corrupt: rebuild it with `probe-lens build-reference`"
        )

    if not isinstance(header, dict) or not isinstance(header.get("prompts"), dict):
        raise bad(1, "the header is not a mapping with 'prompts'")
    for pid, prompt in header["prompts"].items():
        if not isinstance(prompt, dict) or not ids_ok(prompt.get("ids")):
            raise bad(1, f"prompt {pid!r} has no valid token ids (a non-empty list of integers >= 0)")
    for i, rec in enumerate(recs, start=2):
        if not isinstance(rec, dict):
            raise bad(i, f"a row is a mapping, not a JSON {type(rec).__name__}")
        if not ids_ok(rec.get("ids")):
            raise bad(i, f"'ids' must be a non-empty list of integers >= 0, got {str(rec.get('ids'))[:60]}")
        score = rec.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
            raise bad(i, f"'score' must be a number in [0, 1], got {score!r}")
        if rec.get("prompt_id") not in header["prompts"]:
            raise bad(i, f"prompt_id {rec.get('prompt_id')!r} is not among the header's prompts")


def load_reference(path: str | Path | None = None) -> ReferenceSet:
    """The reference set at ``path`` (default: the one shipped for the embedded Gemma-3-270M)."""
    return ReferenceSet.load(path)


# ---------------------------------------------------------------------------------------- build
def build_reference(
    model: LensModel,
    prompts: Sequence[Prompt],
    scorer: Any,
    config: ReferenceConfig | None = None,
    *,
    out: str | Path,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> ReferenceSet:
    """Sample ``config.samples_per_prompt`` continuations of every prompt, score them, write ``out``.

    Resumable: parts go to ``<out>.parts/`` as they finish and a rerun with the same settings reuses
    them; the final file is written atomically, with ``<out stem>.provenance.json`` beside it.
    """
    cfg = config or ReferenceConfig()
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to sample; pass at least one Prompt")
    if len({p.id for p in prompts}) != len(prompts):
        raise ValueError("prompt ids must be unique")
    out = Path(out)
    parts_dir = out.parent / (out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    who = scorer_name(scorer)
    stamp = {"model_name": model.cfg.model_name, "config": dataclasses.asdict(cfg), "scorer": who,
             "sampler": sampler_id(cfg.fast, model)}  # fmt: skip
    t_start = time.perf_counter()
    frames = []
    chunks = [prompts[i : i + cfg.chunk_prompts] for i in range(0, len(prompts), cfg.chunk_prompts)]
    k = cfg.samples_per_prompt
    for c, chunk in enumerate(tqdm(chunks, desc="reference continuations", disable=not progress)):
        part = parts_dir / f"part{c:04d}.json"
        ids = [p.id for p in chunk]
        if part.is_file():
            saved = json.loads(part.read_text())
            if saved.get("stamp") == stamp and saved.get("prompt_ids") == ids:
                frames.append(pd.DataFrame(saved["rows"]))
                continue
        seeds = [row_seed(cfg.seed, p.id, s) for p in chunk for s in range(k)]
        gen = generate(
            model,
            [p.text for p in chunk for _ in range(k)],
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            row_seeds=seeds,
            batch_size=cfg.batch_size,
            progress=False,
            fast=cfg.fast,
        )
        scores = check_scores(scorer.score(gen.response_texts), gen.response_texts, who)
        resp = gen.tokens[:, gen.prompt_len :]
        mask = gen.response_mask[:, gen.prompt_len :].bool()
        rows = pd.DataFrame(
            {
                "prompt_id": [p.id for p in chunk for _ in range(k)],
                "sample": [s for _ in chunk for s in range(k)],
                "row_seed": seeds,
                "ids": [r[m].tolist() for r, m in zip(resp, mask)],
                "response": gen.response_texts,
                "score": scores.tolist(),
            }
        )
        payload = {"stamp": stamp, "prompt_ids": ids, "rows": rows.to_dict(orient="list")}
        atomic_write(part, lambda p: p.write_text(json.dumps(payload)))  # noqa: B023 (called before the loop moves on)
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    info = {
        "model_name": model.cfg.model_name,
        "config": dataclasses.asdict(cfg),
        "scorer": scorer.describe() if hasattr(scorer, "describe") else {"name": who},
        "n_rows": int(len(rows)),
        "build_s": round(time.perf_counter() - t_start, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": cpu_info()["model"],
        "cpu": cpu_info(),
        **(provenance or {}),
    }
    prompt_info = {
        p.id: {
            "text": p.text,
            "tag": p.tag,
            "topic": getattr(p, "topic", ""),
            "ids": model.to_tokens(p.text, prepend_bos=True, truncate=False)[0].tolist(),
        }
        for p in prompts
    }
    ref = ReferenceSet(rows=rows, prompts=prompt_info, meta=info)
    ref.save(out)
    ref.meta = dict(info, file=out.name, sha256=sha256_file(out))
    prov = dict(ref.meta, counts=ref.counts())
    atomic_write(provenance_path(out), lambda p: p.write_text(json.dumps(prov, indent=2, default=str) + "\n"))
    return ref


def provenance_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / (path.name.removesuffix(".jsonl.gz") + ".provenance.json")


# ----------------------------------------------------------------------------- use in a study
def reference_mismatch(ref: ReferenceSet, model: LensModel, prompts: Sequence[Prompt], cfg: Any) -> str | None:
    """Why ``ref`` cannot replace sampling ``prompts`` with build config ``cfg`` (None when it can)."""
    why = settings_mismatch(ref, model.cfg.model_name, [p.id for p in prompts], cfg)
    if why is not None:
        return why
    changed = [p.id for p in prompts if ref.prompts[p.id]["text"] != p.text]
    if changed:
        return f"{len(changed)} prompts have other texts in it (e.g. {changed[0]})"
    probe = prompts[0]
    if model.to_tokens(probe.text, prepend_bos=True, truncate=False)[0].tolist() != ref.prompts[probe.id]["ids"]:
        return "the model's tokenizer splits its prompts differently"
    return None


def settings_mismatch(ref: ReferenceSet, model_name: str, prompt_ids: Sequence[str], cfg: Any) -> str | None:
    """The part of :func:`reference_mismatch` that needs no model: model name, sampling settings, prompts."""
    rc = ref.config
    if bool(getattr(cfg, "fast_sampling", rc.fast)) != rc.fast:
        return f"it was sampled with fast={rc.fast} (study: data.fast_sampling {cfg.fast_sampling})"
    if ref.meta.get("model_name") != model_name:
        return f"it was sampled from {ref.meta.get('model_name')}, not {model_name}"
    want = {"max_new_tokens": int(cfg.max_new_tokens), "temperature": float(cfg.temperature), "top_p": float(cfg.top_p)}
    have = rc.sampling()
    diff = [f"{k} {have[k]} (study: {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        return "it was sampled with " + ", ".join(diff)
    if int(cfg.seed) != rc.seed:
        return f"it was sampled with seed {rc.seed} (study: data.seed {cfg.seed})"
    if cfg.samples_per_prompt > rc.samples_per_prompt:
        return f"it holds {rc.samples_per_prompt} samples per prompt and the study asks for {cfg.samples_per_prompt}"
    missing = [p for p in prompt_ids if p not in ref.prompts]
    if missing:
        return f"{len(missing)} of the study's {len(prompt_ids)} pool prompts are not in it (e.g. {missing[0]})"
    return None
