"""Trains a TopK sparse autoencoder on the residual stream entering one block of an embedded model:
`python -m explorer.sae.train [--model smollm2-135m-instruct] [--layer 15] [--tokens 1000000] [--out DIR]`
(`--model`: an embedded name, a checkpoint folder or a hub id; `--corpus FILE`: another text).

1. The corpus (explorer.sae.corpus) is tokenized and cut into sequences of CONTEXT tokens; the model
   reads them and the stream entering block `layer` is kept for every position but the first (a
   sequence's first position is the attention sink: SmolLM2's stream there is about 8 times the others').
2. The activations are scaled by one number so that their mean norm is √d_in, and the SAE is trained
   on them with Adam: loss = |x - x̂|² / d_in, plus the AuxK loss of Gao et al. (2024) (the error
   reconstructed by the k_aux largest latents that have not fired for DEAD_TOKENS tokens, times 1/32),
   which keeps latents from dying; the decoder's rows are kept at unit norm. The scale is folded back into
   the weights, so the saved SAE reads and writes the model's own stream.
3. On the held-out docstrings it measures L0, the fraction of variance unexplained, the dead latents
   (never active there), and the cross-entropy loss recovered when the SAE's reconstruction replaces the
   stream (every position but the first) against zero ablation; `explorer.sae.features.evaluate` computes
   the same from the saved files; the per-batch sums behind the figures are saved with them
   (evaluation.safetensors), and a test recomputes a few batches and the figures from the sums.
4. For every latent it keeps the TOP_CONTEXTS strongest activations on the training text, with the
   window of tokens around each and the latent's activation on each of them, its firing frequency and a
   histogram of its non-zero activations: contexts.safetensors beside the weights.

Seeded; at the defaults about 35 minutes on 2 CPU cores. `--evaluate-only` measures the SAE in `--out`
again and rewrites its card's figures. The weights are saved in float16 and the figures measured on them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from explorer.sae import corpus
from explorer.sae.sae import Sae, load

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights" / "sae-smollm2-l15"
CONTEXT = 128
TOP_CONTEXTS = 12
WINDOW = 10  # tokens on each side of a top activation
BINS = 24


@dataclass(frozen=True)
class TrainConfig:
    model: str = "smollm2-135m-instruct"
    layer: int = 15
    tokens: int = 1_000_000
    d_sae: int = 4096
    k: int = 32
    k_aux: int = 256
    aux_coef: float = 1 / 32
    dead_tokens: int = 250_000
    epochs: int = 3
    batch: int = 4096
    lr: float = 4e-4
    seed: int = 0
    eval_sequences: int = 100


class _Stop(Exception):
    """Raised by the hook that has what it needs: the rest of the forward pass is not run."""


def sequences(tokenizer, texts, n_tokens: int) -> torch.Tensor:
    """(n, CONTEXT) token ids: the texts one after another, each ended by the end-of-text token, cut
    into sequences; enough for n_tokens training positions (every position but the first)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    need = math.ceil(n_tokens / (CONTEXT - 1)) * CONTEXT
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        if len(stream) >= need:
            break
    n = len(stream) // CONTEXT
    return torch.tensor(stream[: n * CONTEXT]).view(n, CONTEXT)


def held_out_sequences(tokenizer, n: int) -> torch.Tensor:
    """The first n sequences of the held-out docstrings: what the model card's figures are measured on."""
    return sequences(tokenizer, corpus.iter_texts("held-out"), n * (CONTEXT - 1))[:n]


def stream_at(loaded, ids: torch.Tensor, layer: int, batch: int = 16, progress=None) -> torch.Tensor:
    """(n, CONTEXT, d_model) the stream entering block `layer` for each sequence (the forward pass stops
    there)."""
    from explorer.models import anatomy
    from explorer.runs import hooked

    model = loaded.model
    block = anatomy.of(model).blocks(anatomy.of(model).output_stack)[layer].module
    out = []

    def grab(x):
        out.append(x.detach().float().cpu())
        raise _Stop

    for start in range(0, len(ids), batch):
        try:
            hooked.run(loaded, {"input_ids": ids[start : start + batch]}, [hooked.Hook(block, "pre", grab)],
                       use_cache=False)  # fmt: skip
        except _Stop:
            pass
        if progress:
            progress(min(start + batch, len(ids)), len(ids))
    return torch.cat(out)


def train(x: torch.Tensor, cfg: TrainConfig, log=print) -> tuple[Sae, list[dict]]:
    """A TopK SAE trained on the rows of x (n, d_in), in x's own units."""
    torch.manual_seed(cfg.seed)
    n, d_in = x.shape
    scale = float(x.norm(dim=-1).mean()) / math.sqrt(d_in)
    xs = x / scale
    w_dec = torch.randn(cfg.d_sae, d_in)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    W_dec = torch.nn.Parameter(w_dec)
    W_enc = torch.nn.Parameter(w_dec.T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
    b_dec = torch.nn.Parameter(xs[: min(n, 65536)].mean(0))
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=cfg.lr)
    since = torch.zeros(cfg.d_sae)  # tokens since each latent last fired
    history = []
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(n)
        for start in range(0, n - cfg.batch + 1, cfg.batch):
            xb = xs[order[start : start + cfg.batch]]
            pre = (xb - b_dec) @ W_enc + b_enc
            top = torch.relu(pre).topk(cfg.k, dim=-1)
            f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
            recon = f @ W_dec + b_dec
            err = xb - recon
            mse = err.pow(2).sum(-1).mean() / d_in
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[top.indices[top.values > 0].unique()] = True
            since = torch.where(fired, 0.0, since + len(xb))
            dead = since > cfg.dead_tokens
            aux = torch.zeros(())
            if dead.any():
                k_aux = min(cfg.k_aux, int(dead.sum()))
                dead_pre = torch.relu(pre).masked_fill(~dead, 0.0)
                dtop = dead_pre.topk(k_aux, dim=-1)
                fd = torch.zeros_like(pre).scatter(-1, dtop.indices, dtop.values)
                e_hat = fd @ W_dec
                aux = (err.detach() - e_hat).pow(2).sum(-1).mean() / err.detach().pow(2).sum(-1).mean()
            loss = mse + cfg.aux_coef * aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True)
            if step % 25 == 0:
                fvu = float(err.detach().pow(2).sum() / (xb - xb.mean(0)).pow(2).sum())
                row = {"step": step, "epoch": epoch, "mse": float(mse.detach()), "fvu": fvu,
                       "aux": float(aux.detach()), "dead": int(dead.sum())}  # fmt: skip
                history.append(row)
                log(json.dumps(row))
            step += 1
    with torch.no_grad():  # the scale folded into the weights: the SAE reads and writes x itself
        sae = Sae(W_enc.detach() / scale, b_enc.detach().clone(), W_dec.detach() * scale,
                  b_dec.detach() * scale, "topk", 0, cfg.k)  # fmt: skip
    return sae, history


def top_contexts(sae: Sae, x: torch.Tensor, ids: torch.Tensor, batch: int = 8192) -> dict[str, torch.Tensor]:
    """For every latent: its TOP_CONTEXTS strongest activations on x (rows of (n_seq, CONTEXT - 1)
    positions 1 ... CONTEXT - 1 of `ids`), each as the window of token ids around it and the latent's
    activation on each of those tokens; its firing frequency; a histogram of its non-zero activations."""
    per = CONTEXT - 1
    best_v = torch.full((sae.d_sae, TOP_CONTEXTS), -1.0)
    best_i = torch.zeros((sae.d_sae, TOP_CONTEXTS), dtype=torch.long)
    fires = torch.zeros(sae.d_sae)
    for start in range(0, len(x), batch):
        f = sae.encode(x[start : start + batch])  # (b, d_sae)
        fires += (f > 0).sum(0)
        v, i = f.T.topk(min(TOP_CONTEXTS, f.shape[0]), dim=-1)  # (d_sae, top)
        both_v = torch.cat([best_v, v], -1)
        both_i = torch.cat([best_i, i + start], -1)
        keep = both_v.topk(TOP_CONTEXTS, dim=-1).indices
        best_v, best_i = both_v.gather(-1, keep), both_i.gather(-1, keep)
    top_max = best_v[:, 0].clamp_min(1e-6)
    counts = torch.zeros(sae.d_sae, BINS)
    for start in range(0, len(x), batch):
        f = sae.encode(x[start : start + batch])
        on = f > 0
        bins = (f / top_max * BINS).long().clamp(0, BINS - 1)
        counts.scatter_add_(1, (bins * on).T.contiguous(), on.T.float().contiguous())
    # windows of token ids around each top activation, and the latent's activation on each token
    rows = best_i.clamp_min(0)
    seq, pos = rows // per, rows % per + 1  # position in its sequence (the first is never read)
    offsets = torch.arange(-WINDOW, WINDOW + 1)
    where = (pos[..., None] + offsets).clamp(0, CONTEXT - 1)  # (d_sae, top, window)
    window_ids = ids[seq[..., None].expand_as(where), where]
    outside = (pos[..., None] + offsets < 0) | (pos[..., None] + offsets > CONTEXT - 1)
    window_ids[outside] = -1
    flat_rows = (seq[..., None] * per + where - 1).clamp_min(0)  # the first position: no activation
    acts = torch.zeros(window_ids.shape)
    flat = flat_rows.reshape(-1)
    unique, inverse = flat.unique(return_inverse=True)
    feature = torch.arange(sae.d_sae)[:, None, None].expand_as(where).reshape(-1)
    values = torch.empty(len(flat))
    for start in range(0, len(unique), batch):
        f = sae.encode(x[unique[start : start + batch]])  # (b, d_sae)
        mask = (inverse >= start) & (inverse < start + batch)
        values[mask] = f[inverse[mask] - start, feature[mask]]
    acts = values.view(window_ids.shape)
    acts[(where == 0) | outside] = 0.0
    return {
        "context_ids": window_ids.int(), "context_acts": acts.half(), "top_acts": best_v.float(),
        "frequency": fires / len(x), "hist_counts": counts.int(), "hist_max": top_max.float(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from explorer.models.loading import LoadRequest, load_model

    p = argparse.ArgumentParser(prog="python -m explorer.sae.train", description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--corpus", type=Path, help="a text file instead of the docstrings: paragraphs, one per text"
    )
    p.add_argument("--evaluate-only", action="store_true",
                   help="measure the SAE already in --out again and rewrite its card's figures")  # fmt: skip
    args = p.parse_args(argv)
    if args.evaluate_only:
        sae = load(args.out)
        loaded = load_model(LoadRequest.parse(sae.cfg["model_name"]))
        finish(loaded, sae, args.out, {k: v for k, v in sae.cfg.items() if k not in CFG_OWN})
        return 0
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    loaded = load_model(LoadRequest.parse(cfg.model))
    tok = loaded.tokenizer
    print("reading the corpus …", flush=True)
    if args.corpus is not None:  # one text per paragraph; every tenth held out
        paragraphs = [t.strip() for t in args.corpus.read_text().split("\n\n") if t.strip()]
        train_texts = [t for i, t in enumerate(paragraphs) if i % 10 != 9]
        test_texts = [t for i, t in enumerate(paragraphs) if i % 10 == 9]
    else:
        train_texts, test_texts = corpus.texts("train"), corpus.texts("held-out")  # the card counts them
    ids = sequences(tok, train_texts, cfg.tokens)
    print(f"{ids.numel():,} tokens in {len(ids)} sequences; collecting the stream at layer {cfg.layer} …",
          flush=True)  # fmt: skip

    def report(done, total):
        if done % 512 < 16 or done == total:
            print(f"  {done}/{total} sequences ({time.time() - t0:.0f} s)", flush=True)

    acts = stream_at(loaded, ids, cfg.layer, progress=report)[:, 1:].reshape(
        -1, loaded.model.config.hidden_size
    )
    t_collect = time.time() - t0
    print(f"training on {len(acts):,} activations …", flush=True)
    sae, history = train(acts, cfg)
    sae.layer = cfg.layer
    t_train = time.time() - t0 - t_collect
    print("top contexts …", flush=True)
    ctx = top_contexts(sae, acts, ids)
    del acts
    minutes = (time.time() - t0) / 60
    card_cfg = {
        "model_name": cfg.model, "context_size": CONTEXT, "training_tokens": int(len(ids) * (CONTEXT - 1)),
        "train_config": asdict(cfg), "corpus": corpus.describe(), "train_texts": len(train_texts),
        "corpus_file": None if args.corpus is None else args.corpus.name,
        "held_out_texts": len(test_texts), "minutes": round(minutes, 1),
        "minutes_collecting": round(t_collect / 60, 1), "minutes_training": round(t_train / 60, 1),
    }  # fmt: skip
    sae.save(args.out, dtype=DTYPE, **card_cfg)
    save_file({k: v.contiguous() for k, v in ctx.items()}, args.out / "contexts.safetensors")
    (args.out / "history.json").write_text(json.dumps(history) + "\n")
    finish(loaded, load(args.out), args.out, card_cfg, test_texts if args.corpus is not None else None)
    return 0


DTYPE = torch.float16  # the saved weights (half the size; the card's figures are measured on them)
CFG_OWN = ("architecture", "d_in", "d_sae", "hook_name", "hook_layer", "apply_b_dec_to_input", "dtype", "k")


def finish(loaded, sae: Sae, out: Path, card_cfg: dict, texts: list[str] | None = None) -> None:
    """Measures the saved SAE (its weights as saved) on the held-out sequences (of `texts`, else of the
    docstrings) and writes the figures into cfg.json and the model card (README.md), and the per-batch
    sums they come from into evaluation.safetensors."""
    from safetensors.torch import save_file

    from explorer.sae import features

    n = card_cfg["train_config"]["eval_sequences"]
    if texts is None:
        test_ids = held_out_sequences(loaded.tokenizer, n)
    else:
        test_ids = sequences(loaded.tokenizer, texts, n * (CONTEXT - 1))[:n]
    parts = features.measure(loaded, sae, test_ids)
    scores = features.figures(parts)
    card_cfg = {**card_cfg, "held_out_tokens": int(test_ids.numel()), "evaluation": scores}
    sae.save(out, dtype=DTYPE, **card_cfg)
    save_file(parts, out / features.EVALUATION)
    (out / "README.md").write_text(card(sae, card_cfg))
    print(json.dumps(scores))


def card(sae: Sae, cfg: dict) -> str:
    from explorer.sae.features import BATCH

    e, t = cfg["evaluation"], cfg["train_config"]
    dead = e["dead"] / sae.d_sae
    ce = f"{e['ce_clean']:.3f} / {e['ce_sae']:.3f} / {e['ce_zero']:.3f}"
    if cfg.get("corpus_file"):
        source = (
            f"The paragraphs of {cfg['corpus_file']}: {cfg['train_texts']:,} for training, "
            f"{cfg['held_out_texts']:,} (every tenth) held out."
        )
    else:
        source = (
            "The docstrings of Python's standard library (PSF licence), torch (BSD-3-Clause) and "
            f"transformers (Apache-2.0), as installed here ({cfg['corpus']}): every docstring of at least "
            f"{corpus.MIN_CHARS} characters, each once; {cfg['train_texts']:,} for training, "
            f"{cfg['held_out_texts']:,} held out (chosen by a hash of the text). English documentation prose "
            "with code in it."
        )
    return f"""# A sparse autoencoder on {cfg["model_name"]}, layer {sae.layer}

Trained by this project (`python -m explorer.sae.train`), saved in SAELens' layout: `cfg.json` and
`sae_weights.safetensors` (W_enc [{sae.d_in}, {sae.d_sae}], b_enc, W_dec [{sae.d_sae}, {sae.d_in}], b_dec;
TopK, k = {sae.k}). It reads the residual stream entering block {sae.layer} of {cfg["model_name"]},
`blocks.{sae.layer}.hook_resid_pre`.

## Corpus
{source} Each text is followed by the end-of-text token and the stream
is cut into sequences of {cfg["context_size"]} tokens; the first position of each is left out (the
attention sink). Training read {cfg["training_tokens"]:,} activations, {t["epochs"]} epochs.

## Training
Adam, learning rate {t["lr"]}, batch {t["batch"]}, seed {t["seed"]}; the activations scaled to a mean
norm of √d_in while training (folded back into the weights); AuxK loss (k_aux {t["k_aux"]}, coefficient
{t["aux_coef"]:.4f}) on latents silent for {t["dead_tokens"]:,} tokens; decoder rows at unit norm.
{cfg["minutes"]} minutes on this machine's CPU ({cfg["minutes_collecting"]} collecting activations,
{cfg["minutes_training"]} training).

## Quality, on {cfg["held_out_tokens"]:,} held-out tokens
| figure | value |
|---|---|
| L0 (latents active per token) | {e["l0"]:.1f} |
| fraction of variance unexplained | {e["fvu"]:.3f} |
| dead latents (never active on the held-out text) | {e["dead"]} of {sae.d_sae} ({dead:.1%}) |
| cross-entropy: clean / SAE spliced in / stream zeroed | {ce} |
| loss recovered (zeroed 0, clean 1) | {e["loss_recovered"]:.3f} |

The SAE's reconstruction replaces the stream entering block {sae.layer} at every position but the first;
zero ablation replaces it by zeros there, {e["tokens"]:,} positions in batches of {BATCH} sequences.
`evaluation.safetensors` keeps each batch's sums (active latents, squared error, the three
cross-entropies, the stream's sum and squared norm, the latents that fired), which these figures are made
of; `tests/unit/test_sae_embedded.py` recomputes the figures from them and a few batches from this folder's
weights and the held-out text.

`history.json`: the training loss every 25 steps. `contexts.safetensors`: each latent's {TOP_CONTEXTS}
strongest activations on the training text (token
ids of the {WINDOW} tokens on each side, -1 outside the sequence, and the latent's activation on each),
its firing frequency and a histogram of its non-zero activations ({BINS} bins up to its largest).
"""


if __name__ == "__main__":
    raise SystemExit(main())
