"""Tasks done on the model classes directly: extractive question answering (start/end logits),
generation, chat, summarization and translation (sequence-to-sequence or by prompting a decoder),
zero-shot classification by label log-probability, token features, sentence embeddings, similarity and
semantic search. transformers 5.24 has no question-answering, summarization, translation or
text2text-generation pipelines, so these are written here on `generate` and the forward pass.

Each runner takes (loaded, texts, TaskInput, notes, progress) and returns one JSON-ready dict per text;
`explorer.tasks.run` holds the model's lock and an inference_mode context around them.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

import torch

from explorer.analyses.tokens import display_tokens
from explorer.runs.stepping import chat_prompt
from explorer.tasks.common import TaskError, check_text, embedding_limit, head_model, token_limit

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel
    from explorer.tasks.common import Progress, TaskInput

QA_MAX_ANSWER_TOKENS = 30
QA_WINDOW = 384
QA_BATCH = 8
MAX_NEW_TOKENS = 512
DEFAULT_NEW_TOKENS = 48
DEFAULT_TARGET = "French"
ANSWER_START = "The label that fits best is"


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


# --- embeddings --------------------------------------------------------------------------------------------


def hidden_model(loaded: LoadedModel):
    """The module whose last_hidden_state is the model's token features: the encoder of an
    encoder-decoder, else the base model under any head."""
    if loaded.card.family == "encoder-decoder":
        return loaded.model.get_encoder()
    return getattr(loaded.model, "base_model", loaded.model)


def token_states(
    loaded: LoadedModel, text: str, limit: int | None, notes: list[str]
) -> tuple[list[int], torch.Tensor]:
    """Token ids (special tokens included) and the last hidden state, (pos, d_model), for one text cut to
    `limit` tokens (with a note when cut)."""
    tok = loaded.tokenizer
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if limit is not None and len(ids) > limit:
        notes.append(
            f"An input has {len(ids):,} tokens; {loaded.card.name} reads at most {limit:,} here, so only the "
            f"first {limit:,} were used."
        )
        ids = tok(text, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    model = hidden_model(loaded)
    x = torch.tensor([ids], device=_device(model))  # (1, pos)
    out = model(input_ids=x, attention_mask=torch.ones_like(x))
    return ids, out.last_hidden_state[0].float()  # (pos, d_model)


def embed(loaded: LoadedModel, texts: list[str], notes: list[str]) -> torch.Tensor:
    """Sentence embeddings, (n, d_model), unit length: the mean of the last hidden state over every token
    (special tokens included) as sentence-transformers pools all-MiniLM-L6-v2, then L2-normalized. Each
    text runs alone, so no padding enters the mean."""
    limit = embedding_limit(loaded)
    vecs = [token_states(loaded, t, limit, notes)[1].mean(dim=0) for t in texts]  # each (d_model,)
    return torch.nn.functional.normalize(torch.stack(vecs), dim=-1)


def features(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: tokens, the last hidden state (pos, d_model), each vector's norm, and the mean-pooled
    vector (d_model,)."""
    items = []
    for i, text in enumerate(texts):
        progress(i / len(texts), f"text {i + 1} of {len(texts)}")
        ids, h = token_states(loaded, text, token_limit(loaded), notes)
        items.append(
            {
                "text": text,
                "tokens": display_tokens(loaded.tokenizer, ids),
                "shape": list(h.shape),
                "vectors": h.tolist(),
                "norms": h.norm(dim=-1).tolist(),
                "mean": h.mean(dim=0).tolist(),
            }
        )
    return items


def similarity(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """One item: the sentences and their cosine-similarity matrix (n, n)."""
    if len(texts) < 2:
        raise TaskError("Sentence similarity compares sentences: give at least two, one per line.")
    if len(texts) > 64:
        raise TaskError(f"{len(texts)} sentences: the matrix takes at most 64.")
    progress(0.0, f"embedding {len(texts)} sentences")
    e = embed(loaded, texts, notes)  # (n, d_model)
    return [{"sentences": texts, "matrix": (e @ e.T).tolist(), "d_model": int(e.shape[1])}]


def search(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per query: the documents (lines of `given.context`) ranked by cosine similarity."""
    docs = [d.strip() for d in given.context.splitlines() if d.strip()]
    if not docs:
        raise TaskError("Semantic search needs documents to search: paste them, one per line.")
    docs = [check_text(d, "document") for d in docs[:500]]
    progress(0.0, f"embedding {len(docs)} documents")
    doc_vecs = embed(loaded, docs, notes)  # (doc, d_model)
    items = []
    for i, query in enumerate(texts):
        progress((i + 1) / (len(texts) + 1), f"query {i + 1} of {len(texts)}")
        scores = (doc_vecs @ embed(loaded, [query], notes)[0]).tolist()
        order = sorted(range(len(docs)), key=lambda j: -scores[j])
        items.append(
            {"query": query, "ranking": [{"rank": r + 1, "index": j, "document": docs[j], "score": scores[j]}
                                         for r, j in enumerate(order)]}
        )  # fmt: skip
    return items


# --- extractive question answering -------------------------------------------------------------------------


def answer(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per question: the best span of the context. The context is read in overlapping windows of at most
    QA_WINDOW tokens; in each, start and end logits are softmaxed over the context tokens, a span (s, e)
    with s <= e < s + QA_MAX_ANSWER_TOKENS scores p_start[s] * p_end[e], and the best span of all windows
    wins. Returned with the winning window's context tokens, their character offsets and probabilities."""
    if not given.context.strip():
        raise TaskError("A question needs a context: paste the passage that holds the answer.")
    context = check_text(given.context, "context")
    model = head_model(loaded, "AutoModelForQuestionAnswering")
    tok = loaded.tokenizer
    if not getattr(tok, "is_fast", False):
        raise TaskError("Question answering needs a fast tokenizer (for character offsets); this one is not.")
    window = min(token_limit(loaded) or QA_WINDOW, QA_WINDOW)
    items = []
    for qi, question in enumerate(texts):
        n_question = len(tok(question, add_special_tokens=False)["input_ids"])
        if n_question > window // 2:
            raise TaskError(
                f"The question has {n_question} tokens; keep it under {window // 2} so that the context "
                "fits beside it."
            )
        enc = tok(
            question, context, truncation="only_second", max_length=window, stride=window // 4,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest",
            return_tensors="pt",
        )  # fmt: skip
        n_windows = enc["input_ids"].shape[0]
        if n_windows > 1:
            notes.append(f"The context is longer than one window: read in {n_windows} overlapping windows.")
        best: dict[str, Any] | None = None
        for w0 in range(0, n_windows, QA_BATCH):
            progress((qi + w0 / n_windows) / len(texts), f"question {qi + 1}: window {w0 + 1} of {n_windows}")
            batch = {
                k: enc[k][w0 : w0 + QA_BATCH].to(_device(model))
                for k in ("input_ids", "attention_mask", "token_type_ids")
                if k in enc and _accepts(model, k)
            }
            out = model(**batch)
            for b in range(batch["input_ids"].shape[0]):
                found = _best_span(enc, w0 + b, out.start_logits[b].float(), out.end_logits[b].float())
                if found is not None and (best is None or found["score"] > best["score"]):
                    best = found
        if best is None:
            raise TaskError("The context has no tokens left beside the question.")
        ids = enc["input_ids"][best["window"]].tolist()
        best["tokens"] = [display_tokens(tok, [ids[i]])[0] for i in best.pop("positions")]
        best["answer"] = context[best["start"] : best["end"]]
        items.append({"question": question, "context": context, "n_windows": n_windows, **best})
    return items


def _best_span(enc, w: int, start_logits: torch.Tensor, end_logits: torch.Tensor) -> dict | None:
    """The best span in window `w`; logits are (pos,)."""
    seq = enc.sequence_ids(w)
    ctx = [i for i, s in enumerate(seq) if s == 1]
    if not ctx:
        return None
    idx = torch.tensor(ctx, device=start_logits.device)
    p_start = start_logits[idx].softmax(-1)  # (ctx,)
    p_end = end_logits[idx].softmax(-1)  # (ctx,)
    pair = p_start[:, None] * p_end[None, :]  # (ctx, ctx): start s, end e
    n = len(ctx)
    band = torch.ones(n, n, dtype=torch.bool, device=pair.device).triu().tril(QA_MAX_ANSWER_TOKENS - 1)
    pair = torch.where(band, pair, torch.zeros_like(pair))
    flat = int(pair.argmax())
    s, e = divmod(flat, n)
    offsets = enc["offset_mapping"][w].tolist()
    return {
        "window": w,
        "score": float(pair[s, e]),
        "start": int(offsets[ctx[s]][0]),
        "end": int(offsets[ctx[e]][1]),
        "start_token": s,
        "end_token": e,
        "positions": ctx,
        "offsets": [offsets[i] for i in ctx],
        "start_probs": p_start.tolist(),
        "end_probs": p_end.tolist(),
    }


# --- generation --------------------------------------------------------------------------------------------


def settings(options: dict) -> dict:
    """The generation settings a user gave, checked, with defaults (greedy, DEFAULT_NEW_TOKENS)."""
    n = int(options.get("max_new_tokens", DEFAULT_NEW_TOKENS))
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise TaskError(f"New tokens must be between 1 and {MAX_NEW_TOKENS}; {n} was asked.")
    out = {"max_new_tokens": n, "do_sample": bool(options.get("do_sample", False))}
    if out["do_sample"]:
        temperature = float(options.get("temperature", 1.0))
        if temperature <= 0:
            raise TaskError("Temperature must be above 0 (greedy decoding is sampling turned off).")
        out.update(
            temperature=temperature,
            top_k=int(options.get("top_k", 50)),
            top_p=float(options.get("top_p", 1.0)),
            seed=int(options.get("seed", 0)),
        )
    penalty = float(options.get("repetition_penalty", 1.0))
    if penalty != 1.0:
        out["repetition_penalty"] = penalty
    return out


def _progress_criteria(total: int, progress: Progress, label: str):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Report(StoppingCriteria):
        """Never stops generation: reports each step to `progress`."""

        def __init__(self) -> None:
            self.step = 0

        def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
            self.step += 1
            progress(min(self.step / total, 1.0), f"{label}: token {self.step} of at most {total}")
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Report()])


def generate_ids(
    loaded: LoadedModel, ids: list[int], opts: dict, notes: list[str], progress: Progress, label: str,
    extra: dict | None = None,
) -> dict:  # fmt: skip
    """Runs model.generate on one prompt (`ids`: the decoder prompt, or the encoder input of an
    encoder-decoder) and returns the new token ids with timings. A decoder prompt that would run past
    the context is cut from the left, with a note."""
    model, tok = loaded.model, loaded.tokenizer
    limit = token_limit(loaded)
    n_new = opts["max_new_tokens"]
    if loaded.card.family == "decoder" and limit is not None and len(ids) + n_new > limit:
        keep = limit - n_new
        if keep < 1:
            raise TaskError(
                f"{loaded.card.name} reads {limit} tokens: ask for fewer than {limit} new tokens."
            )
        notes.append(
            f"The prompt has {len(ids):,} tokens; with {n_new} new ones that passes {loaded.card.name}'s "
            f"context of {limit:,}, so only its last {keep:,} tokens were used."
        )
        ids = ids[-keep:]
    elif loaded.card.family == "encoder-decoder" and limit is not None and len(ids) > limit:
        notes.append(
            f"The input has {len(ids):,} tokens; the encoder reads at most {limit:,}: the rest was cut."
        )
        ids = ids[: limit - 1] + ids[-1:]  # keep the closing </s>
    x = torch.tensor([ids], device=_device(model))  # (1, pos)
    kwargs: dict[str, Any] = {k: v for k, v in opts.items() if k != "seed"}
    if not opts["do_sample"]:
        kwargs.update(temperature=None, top_k=None, top_p=None)  # greedy: no warper from generation_config
    if tok.pad_token_id is None:
        kwargs["pad_token_id"] = tok.eos_token_id
    kwargs.update(extra or {})
    if loaded.card.family == "encoder-decoder":
        from transformers import DynamicCache, EncoderDecoderCache

        # Caches that grow a layer at a time: the default one is sized by the config's num_hidden_layers,
        # the encoder's count, and breaks on a decoder deeper than its encoder.
        kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    if opts["do_sample"]:
        torch.manual_seed(opts["seed"])
    started = time.perf_counter()
    out = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        stopping_criteria=_progress_criteria(n_new, progress, label),
        **kwargs,
    )
    seconds = time.perf_counter() - started
    new = out[0, 1:] if loaded.card.family == "encoder-decoder" else out[0, x.shape[1] :]
    new_ids = new.tolist()
    eos = set(_as_list(model.generation_config.eos_token_id) or _as_list(tok.eos_token_id))
    return {
        "prompt_ids": ids,
        "new_ids": new_ids,
        "n_new_tokens": len(new_ids),
        "seconds": seconds,
        "seconds_per_token": seconds / max(len(new_ids), 1),
        "stopped": "end of sequence" if new_ids and new_ids[-1] in eos else "token limit",
    }


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _decode(loaded: LoadedModel, ids: list[int]) -> str:
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)


def generate_text(
    loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress
):
    """Per prompt: the continuation, with its settings and timing."""
    opts = settings(given.options)
    items = []
    for i, prompt in enumerate(texts):
        ids = loaded.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        run = generate_ids(loaded, ids, opts, notes, _sub(progress, i, len(texts)), f"prompt {i + 1}")
        items.append(
            {"prompt": prompt, "generated": _decode(loaded, run["new_ids"]), "settings": opts, **run}
        )
    return items


def chat(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """`texts` are the turns so far (user, assistant, ..., user); one item: the assistant's reply."""
    opts = settings(given.options)
    prompt = chat_prompt(loaded, texts)
    ids = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    run = generate_ids(loaded, ids, opts, notes, progress, "reply")
    reply = _decode(loaded, run["new_ids"]).strip()
    return [{"turns": texts, "prompt": prompt, "reply": reply, "generated": reply, "settings": opts, **run}]


def _sub(progress: Progress, i: int, n: int) -> Progress:
    return lambda fraction, stage: progress((i + fraction) / n, stage)


def _prompted(loaded: LoadedModel, instruction: str, plain: str) -> tuple[list[int], str]:
    """Prompt ids for a decoder: `instruction` under the chat template when it has one, else `plain`."""
    tok = loaded.tokenizer
    if loaded.card.chat_template:
        text = chat_prompt(loaded, [instruction])
        return tok(text, add_special_tokens=False)["input_ids"], text
    return tok(plain, add_special_tokens=True)["input_ids"], plain


def _seq2seq_params(loaded: LoadedModel, key: str, opts: dict) -> tuple[str, dict]:
    """The prefix and generation settings a checkpoint keeps for a task (T5's task_specific_params)."""
    params = dict((getattr(loaded.model.config, "task_specific_params", None) or {}).get(key) or {})
    prefix = params.pop("prefix", "") or ""
    extra = {k: v for k, v in params.items() if k in ("num_beams", "length_penalty", "no_repeat_ngram_size")}
    if "min_length" in params:
        extra["min_new_tokens"] = min(int(params["min_length"]), opts["max_new_tokens"])
    return prefix, extra


def text_to_text(
    loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress
):
    """Per text: what the encoder-decoder writes for it, the text given as it is (no task prefix added)."""
    opts = settings({"max_new_tokens": 40, **given.options})
    items = []
    for i, text in enumerate(texts):
        ids = loaded.tokenizer(text, add_special_tokens=True)["input_ids"]
        run = generate_ids(loaded, ids, opts, notes, _sub(progress, i, len(texts)), f"output {i + 1}")
        out = _decode(loaded, run["new_ids"]).strip()
        items.append(
            {"text": text, "output": out, "method": "sequence-to-sequence", "prompt": text, "settings": opts,
             **run}
        )  # fmt: skip
    return items


def summarize(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: the summary. An encoder-decoder generates it from the text (with T5's 'summarize: '
    prefix when the checkpoint keeps one); a decoder is prompted (and says so in `method`)."""
    opts = settings({"max_new_tokens": 60, **given.options})
    items = []
    for i, text in enumerate(texts):
        sub = _sub(progress, i, len(texts))
        if loaded.card.family == "encoder-decoder":
            prefix, extra = _seq2seq_params(loaded, "summarization", opts)
            ids = loaded.tokenizer(prefix + text, add_special_tokens=True)["input_ids"]
            run = generate_ids(loaded, ids, opts, notes, sub, f"summary {i + 1}", extra)
            method, prompt = "sequence-to-sequence", prefix + text
        else:
            ids, prompt = _prompted(
                loaded,
                f"Summarize the following text in one or two sentences.\n\n{text}",
                f"{text}\n\nTL;DR:",
            )
            run = generate_ids(loaded, ids, opts, notes, sub, f"summary {i + 1}")
            method = "prompted decoder"
        out = _decode(loaded, run["new_ids"]).strip()
        if method == "prompted decoder" and not loaded.card.chat_template:
            out = out.split("\n\n")[0].strip()
        items.append(
            {"text": text, "output": out, "method": method, "prompt": prompt, "settings": opts, **run}
        )
    return items


def translation_pairs(loaded: LoadedModel) -> list[str]:
    """Language pairs a checkpoint keeps prefixes for, e.g. ['en_to_de', 'en_to_fr'] for T5."""
    params = getattr(loaded.model.config, "task_specific_params", None) or {}
    return [k[len("translation_") :] for k in params if k.startswith("translation_")]


def translate(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: the translation. Options: `pair` (a T5 pair such as en_to_de) for encoder-decoders that
    keep prefixes; `target` (a language name) for prompted decoders."""
    opts = settings({"max_new_tokens": 80, **given.options})
    target = str(given.options.get("target") or DEFAULT_TARGET).strip()
    items = []
    for i, text in enumerate(texts):
        sub = _sub(progress, i, len(texts))
        if loaded.card.family == "encoder-decoder":
            pairs = translation_pairs(loaded)
            pair = str(given.options.get("pair") or (pairs[0] if pairs else ""))
            if pairs and pair not in pairs:
                raise TaskError(
                    f"{loaded.card.name} translates {', '.join(pairs)}; {pair!r} is not one of them."
                )
            prefix, extra = _seq2seq_params(loaded, f"translation_{pair}", opts) if pairs else ("", {})
            if not pairs:
                notes.append(f"{loaded.card.name} translates in the one direction it was trained for.")
            ids = loaded.tokenizer(prefix + text, add_special_tokens=True)["input_ids"]
            run = generate_ids(loaded, ids, opts, notes, sub, f"translation {i + 1}", extra)
            method, prompt, direction = "sequence-to-sequence", prefix + text, pair or "as trained"
        else:
            ids, prompt = _prompted(
                loaded,
                f"Translate the following text into {target}. Reply with the translation only.\n\n{text}",
                f"English: {text}\n{target}:",
            )
            run = generate_ids(loaded, ids, opts, notes, sub, f"translation {i + 1}")
            method, direction = "prompted decoder", f"to {target}"
        out = _decode(loaded, run["new_ids"]).strip()
        if method == "prompted decoder" and not loaded.card.chat_template:
            out = out.split("\n")[0].strip()
        items.append(
            {"text": text, "output": out, "method": method, "direction": direction, "prompt": prompt,
             "settings": opts, **run}
        )  # fmt: skip
    return items


# --- zero-shot by prompting ---------------------------------------------------------------------------------


def label_logprobs(loaded: LoadedModel, text: str, labels: list[str], notes: list[str]) -> dict:
    """Zero-shot classification by a decoder: for each label, log P(label tokens | prompt) summed over the
    label's tokens, the prompt asking which label fits (under the chat template when the model has one).
    `scores` is the softmax of those sums over the labels: the probability of each label given that the
    answer is one of them."""
    tok = loaded.tokenizer
    chat_model = loaded.card.chat_template

    def prompt_for(text: str) -> tuple[list[int], str]:
        # The answer's first words are given (as if the model had written them), so that the next tokens
        # are the label itself rather than a preamble such as "The text is ...".
        question = f"Which one of these labels fits the text best: {', '.join(labels)}?\n\nText: {text}"
        if chat_model:
            prompt = chat_prompt(loaded, [question]) + ANSWER_START
            return tok(prompt, add_special_tokens=False)["input_ids"], prompt
        prompt = f"{question}\n{ANSWER_START}"
        return tok(prompt, add_special_tokens=True)["input_ids"], prompt

    label_ids = [tok(" " + x, add_special_tokens=False)["input_ids"] for x in labels]
    limit = token_limit(loaded)
    if limit is not None:
        budget = limit - len(prompt_for("")[0]) - max(len(x) for x in label_ids)
        if budget < 1:
            raise TaskError(
                f"The prompt with these labels does not fit {loaded.card.name}'s context of {limit} tokens."
            )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            notes.append(
                f"A text was cut to its first {budget:,} tokens so that the prompt fits the context."
            )
            text = tok.decode(ids[:budget])
    prompt_ids, prompt = prompt_for(text)
    model = loaded.model
    totals = []
    n_tokens = []
    for answer_ids in label_ids:
        x = torch.tensor([prompt_ids + answer_ids], device=_device(model))  # (1, pos)
        logp = model(input_ids=x).logits[0].float().log_softmax(-1)  # (pos, vocab)
        start = len(prompt_ids)
        picked = [
            logp[start - 1 + j, t] for j, t in enumerate(answer_ids)
        ]  # position before each label token
        totals.append(float(torch.stack(picked).sum()))
        n_tokens.append(len(answer_ids))
    probs = torch.tensor(totals).softmax(-1).tolist()
    order = sorted(range(len(labels)), key=lambda j: -probs[j])
    return {
        "text": text,
        "labels": [labels[j] for j in order],
        "scores": [probs[j] for j in order],
        "logprobs": [totals[j] for j in order],
        "label_tokens": [n_tokens[j] for j in order],
        "method": "prompt",
        "score_name": "probability among the labels (softmax of each label's log-probability as the answer)",
        "prompt": prompt,
    }
