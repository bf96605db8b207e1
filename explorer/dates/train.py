"""Trains the embedded date normalizer: `python -m explorer.dates.train [--out FOLDER]`.

A small T5 (`T5ForConditionalGeneration`, relative position bias, character tokens) learns to rewrite
dates in any of `explorer.dates.data.FORMATS` as YYYY-MM-DD, on examples generated afresh for every batch
from the training days. It then prints exact-match accuracy by greedy `generate` on 1,000 examples of
the held-out days (overall and per format), and how much of the last decoder layer's cross-attention
falls on the input's year while the model writes the year. It saves the model, its tokenizer and a
model card (README.md) to `--out` (default: the folder the zoo loads, explorer/weights/date-normalizer).

Everything is seeded; on one CPU thread the default run takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explorer.dates import data as dates

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights" / "date-normalizer"
TEST_SEED = 7
TEST_SIZE = 1000


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    steps: int = 1200
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 150
    d_model: int = 128
    d_ff: int = 512
    n_heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 1  # one cross-attention layer, which alone must find the input (sharper maps)
    threads: int = 1  # on a busy 2-core machine, 2 torch threads wait on each other: 1 is faster there


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, tokenizer: Any):
    """A T5 with `cfg`'s sizes; pad (0) is the decoder start, eos (1) ends generation."""
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=cfg.d_model,
        d_kv=cfg.d_model // cfg.n_heads,
        d_ff=cfg.d_ff,
        num_layers=cfg.encoder_layers,
        num_decoder_layers=cfg.decoder_layers,
        num_heads=cfg.n_heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=64,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=len("YYYY-MM-DD") + 2,
        do_sample=False,
    )
    return model


def encode(tokenizer: Any, sources: list[str], targets: list[str]) -> dict:
    """input_ids and attention_mask [batch, src]; labels [batch, tgt] (every target has 10 characters
    and eos, so no label is padding)."""
    batch = tokenizer(sources, padding=True, return_tensors="pt")
    batch["labels"] = tokenizer(text_target=targets, padding=True, return_tensors="pt").input_ids
    return batch


def generate(model: Any, tokenizer: Any, sources: list[str], batch_size: int = 500) -> list[str]:
    """Greedy outputs of `model` for `sources`, decoded without special tokens."""
    import torch

    out = []
    for i in range(0, len(sources), batch_size):
        batch = tokenizer(sources[i : i + batch_size], padding=True, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**batch, do_sample=False)
        out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return out


def accuracy(model: Any, tokenizer: Any, examples: list[tuple[str, str, str]]) -> dict:
    """Exact-match accuracy overall and per format, and the examples it got wrong."""
    outputs = generate(model, tokenizer, [s for s, _, _ in examples])
    right: dict[str, list[bool]] = defaultdict(list)
    wrong = []
    for (source, target, fmt), got in zip(examples, outputs):
        right[fmt].append(got == target)
        if got != target:
            wrong.append({"source": source, "target": target, "output": got, "format": fmt})
    flat = [ok for oks in right.values() for ok in oks]
    return {
        "overall": sum(flat) / len(flat),
        "per_format": {f: sum(right[f]) / len(right[f]) for f in dates.FORMATS if right[f]},
        "n": len(flat),
        "wrong": wrong,
    }


def year_attention(model: Any, tokenizer: Any, examples: list[tuple[str, str, str]]) -> Any:
    """Teacher-forced with the correct output: the share of the last decoder layer's cross-attention
    (mean over heads) on the input's four year characters, at the four steps that write the year.
    Returns [example, 4]."""
    import torch

    sources, targets = [s for s, _, _ in examples], [t for _, t, _ in examples]
    batch = encode(tokenizer, sources, targets)
    start = torch.full((len(targets), 1), model.config.decoder_start_token_id)
    decoder_input_ids = torch.cat([start, batch["labels"][:, :-1]], dim=1)  # [batch, tgt]
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            output_attentions=True,
        )
    if not out.cross_attentions:
        raise ValueError("The model returned no attention weights: load it with attn_implementation='eager'.")
    cross = out.cross_attentions[-1].mean(dim=1)  # [batch, tgt, src]
    shares = torch.zeros(len(sources), 4)
    for i, source in enumerate(sources):
        lo, hi = dates.year_span(source)  # one token per character: character i is token i
        shares[i] = cross[i, :4, lo:hi].sum(dim=-1)  # output steps 0-3 write the year
    return shares


def train(cfg: TrainConfig, log=print) -> tuple[Any, Any, dict]:
    """Trains a model; returns (model, tokenizer, measurements)."""
    import torch

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    tokenizer = dates.char_tokenizer()
    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"T5, {n_params:,} parameters; {cfg.steps} steps of {cfg.batch_size}; torch threads: {cfg.threads}")
    train_days, _ = dates.split_days()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / (cfg.steps - cfg.warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    started = time.perf_counter()
    recent: list[float] = []
    for step in range(cfg.steps):
        examples = dates.examples(train_days, cfg.batch_size, seed=cfg.seed * 1_000_003 + step)
        batch = encode(tokenizer, [s for s, _, _ in examples], [t for _, t, _ in examples])
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - started
            log(
                f"step {step + 1:>5}/{cfg.steps}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {schedule.get_last_lr()[0]:.2e}  {elapsed:6.0f} s"
            )
            recent = []
    model.eval()
    model.set_attn_implementation("eager")  # sdpa, the default, returns no attention weights
    return model, tokenizer, {"train_seconds": time.perf_counter() - started, "n_params": n_params}


def held_out() -> list[tuple[str, str, str]]:
    """The 1,000 test examples: held-out days, every format in turn."""
    _, test_days = dates.split_days()
    return dates.examples(test_days, TEST_SIZE, seed=TEST_SEED)


def model_card(cfg: TrainConfig, results: dict) -> str:
    """The model folder's README.md: what the model is, how it was trained, and what it scores."""
    rng = random.Random(1)
    day = dates.dt.date(2026, 11, 23)
    samples = "\n".join(f"| {f} | `{dates.render(day, f, rng)}` |" for f in dates.FORMATS)
    per_format = "\n".join(f"| {f} | {acc:.1%} |" for f, acc in results["per_format"].items())
    n_train, n_test = (len(d) for d in dates.split_days())
    v = results["versions"]
    years = f"{dates.FIRST_YEAR}-{dates.LAST_YEAR}"
    n_vocab = len(dates.SPECIALS) + len(dates.CHARACTERS)
    lowest = results["year_attention_min"]
    return f"""# date-normalizer

A small T5 encoder-decoder (`T5ForConditionalGeneration`) that rewrites a date written in English in
many ways as ISO 8601 (`23rd Nov 2026` -> `2026-11-23`). Trained from scratch by this repository
(`python -m explorer.dates.train`), to show cross-attention in class: while the model writes the year,
month and day, its decoder looks at the input's year, month and day. It is the embedded
encoder-decoder of Transformer Explorer (`date-normalizer`).

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("explorer/weights/date-normalizer")
model = AutoModelForSeq2SeqLM.from_pretrained("explorer/weights/date-normalizer")
ids = model.generate(**tokenizer(["Monday, November 23rd, 2026"], return_tensors="pt"))
tokenizer.batch_decode(ids, skip_special_tokens=True)  # ['2026-11-23']
```

## Model

| | |
| --- | --- |
| architecture | T5 (pre-norm RMSNorm, relative position bias in self-attention, ReLU feed-forward) |
| layers | {cfg.encoder_layers} encoder + {cfg.decoder_layers} decoder |
| heads | {cfg.n_heads} (head size {cfg.d_model // cfg.n_heads}) |
| d_model / d_ff | {cfg.d_model} / {cfg.d_ff} |
| parameters | {results["n_params"]:,} (float32, safetensors; input and output embeddings tied) |
| tokenizer | {n_vocab} tokens, one per character; `</s>` appended; `<pad>` 0 (decoder start), `</s>` 1 |

Generation: the decoder starts from `<pad>` and stops at `</s>`; `generation_config.json` sets greedy
decoding and at most {len("YYYY-MM-DD") + 2} new tokens.

## Data

Generated afresh for every batch by `explorer/dates/data.py`: valid dates only, years {years}, every
format in turn. Month names in full or abbreviated (`Nov`, `Nov.`, `Sept`); days with or
without ordinal suffixes (`23rd`) or a leading zero; an optional weekday in front (full or abbreviated,
always the date's own weekday, from `datetime`); commas optional; names in title case, lower case
or upper case. Numeric dates are day first. The formats, with one rendering each of 23 November 2026:

| format | example |
| --- | --- |
{samples}

A fixed {dates.HOLDOUT_FRACTION:.0%} of the days of {years} ({n_test:,} days, chosen by a shuffle seeded
with {dates.HOLDOUT_SEED}) is held out: training draws from the other {n_train:,} days only.

## Training

Seed {cfg.seed} (Python, NumPy and torch); {cfg.steps:,} steps of {cfg.batch_size} examples; AdamW,
learning rate {cfg.lr:g} with {cfg.warmup} warm-up steps and cosine decay to zero, weight decay 0.01,
gradient clipping at 1; no dropout; cross-entropy on the target characters and `</s>`. Training took
**{results["train_seconds"]:.0f} s** on {results["machine"]} (a machine shared with other work, so a
pessimistic figure); Python {v["python"]}, torch {v["torch"]}, transformers {v["transformers"]}.

Reproduce (overwrites this folder): `python -m explorer.dates.train` (`--help` lists the settings).
On another machine or torch build the weights can differ in the last bits; the scores should not.

## Evaluation

Exact match of greedy `generate` on {TEST_SIZE:,} examples of the held-out days, every format in turn:
**{results["accuracy"]:.1%}**.

| format | exact match |
| --- | --- |
{per_format}

Cross-attention: teacher-forced with the correct output, the last decoder layer's cross-attention
(mean of its heads) puts on average {results["year_attention_mean"]:.0%} of its weight on the input's four
year characters at the four steps that write the year (lowest single step: {lowest:.0%}; 200 held-out
examples).

## Limits

English month and weekday names only; numeric dates are read day first (`05/06/2026` is 5 June);
four-digit years {years}; no times, time zones or two-digit years. The output for an input that is
not a date is meaningless. It is a teaching model, not a date parser.
"""


def write_card(out: Path, cfg: TrainConfig, results: dict) -> None:
    (out / "README.md").write_text(model_card(cfg, results))
    (out / "training.json").write_text(json.dumps({"config": asdict(cfg), **results}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.dates.train", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to save the model into")
    for name, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})

    model, tokenizer, measured = train(cfg, log=lambda line: print(line, flush=True))
    test = held_out()
    scores = accuracy(model, tokenizer, test)
    print(f"exact match on {scores['n']} held-out dates: {scores['overall']:.1%}")
    for fmt, acc in scores["per_format"].items():
        print(f"  {fmt:<18} {acc:.1%}")
    for item in scores["wrong"][:10]:
        print(f"  wrong: {item['source']!r} -> {item['output']!r} (expected {item['target']})")
    shares = year_attention(model, tokenizer, test[:200])
    print(
        f"cross-attention (last decoder layer, mean of heads) on the year while writing it: "
        f"mean {shares.mean():.3f}, min {shares.min():.3f}"
    )
    results = {
        **measured,
        "accuracy": scores["overall"],
        "per_format": scores["per_format"],
        "wrong": scores["wrong"],
        "year_attention_mean": float(shares.mean()),
        "year_attention_min": float(shares.min()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads: {cfg.threads}",
        "versions": _versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    write_card(args.out, cfg, results)
    print(f"saved to {args.out} (training {measured['train_seconds']:.0f} s)")
    return 0


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())
