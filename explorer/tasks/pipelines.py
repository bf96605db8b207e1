"""The tasks that transformers 5.24 still has pipelines for: text classification, zero-shot classification
(NLI models), token classification and fill-mask. Each runner takes the loaded model, the checked texts,
the `TaskInput`, a list to append notes to and a progress callback, and returns one dict per text.

Called by `explorer.tasks.run`, which holds the model's lock and checks support first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from explorer.tasks.common import TaskError, head_model, token_limit

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel
    from explorer.tasks.common import Progress, TaskInput

NLI_TEMPLATE = "This example is {}."
FILL_TOP_K = 10


def _pipeline(task: str, model, tokenizer, **kwargs):
    from transformers import pipeline

    return pipeline(task, model=model, tokenizer=tokenizer, **kwargs)


def clip_text(loaded: LoadedModel, text: str, limit: int | None, notes: list[str]) -> str:
    """`text` cut after the first `limit` tokens (special tokens included), with a note when cut. With a
    fast tokenizer the cut is at a character offset, so the clipped text is a prefix of the original and
    offsets into it are offsets into the original."""
    if limit is None:
        return text
    tok = loaded.tokenizer
    budget = limit - tok.num_special_tokens_to_add(pair=False)
    fast = getattr(tok, "is_fast", False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=fast)
    ids = enc["input_ids"]
    if len(ids) <= budget:
        return text
    notes.append(
        f"An input has {len(ids):,} tokens; {loaded.card.name} reads at most {limit:,} (with its special "
        f"tokens), so only the first {budget:,} were used."
    )
    if fast:
        return text[: enc["offset_mapping"][budget - 1][1]]
    return tok.decode(ids[:budget])


def classify(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: every label with its score (softmax over the labels; sigmoid for multi-label heads)."""
    model = head_model(loaded, "AutoModelForSequenceClassification")
    pipe = _pipeline("text-classification", model, loaded.tokenizer)
    multi = (
        getattr(model.config, "problem_type", None) == "multi_label_classification"
        or model.config.num_labels == 1
    )
    items = []
    for i, text in enumerate(texts):
        progress(i / len(texts), f"classifying {i + 1} of {len(texts)}")
        clipped = clip_text(loaded, text, token_limit(loaded), notes)
        out = pipe(clipped, top_k=None)
        items.append(
            {
                "text": text,
                "labels": [o["label"] for o in out],
                "scores": [float(o["score"]) for o in out],
                "function": "sigmoid" if multi else "softmax",
            }
        )
    return items


def zero_shot(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: each candidate label with its score; `method` says what the score is."""
    from explorer.tasks import models as task_models
    from explorer.tasks.common import is_nli

    labels = list(dict.fromkeys(x.strip() for x in given.labels if x.strip()))
    if not labels:
        raise TaskError(
            "No candidate labels: give at least one label (comma-separated, e.g. sport, politics)."
        )
    if len(labels) > 50:
        raise TaskError(f"{len(labels)} candidate labels: give at most 50.")
    items = []
    if is_nli(loaded):
        model = head_model(loaded, "AutoModelForSequenceClassification")
        pipe = _pipeline("zero-shot-classification", model, loaded.tokenizer)
        for i, text in enumerate(texts):
            progress(i / len(texts), f"text {i + 1} of {len(texts)}")
            clipped = clip_text(loaded, text, (token_limit(loaded) or 10**6) - 16, notes)
            out = pipe(clipped, candidate_labels=labels, hypothesis_template=NLI_TEMPLATE)
            items.append(
                {"text": text, "labels": out["labels"], "scores": [float(s) for s in out["scores"]],
                 "method": "nli", "score_name": "probability (softmax of entailment over the labels)"}
            )  # fmt: skip
        return items
    if loaded.card.family == "encoder":
        label_vecs = task_models.embed(loaded, labels, notes)  # (label, d_model), unit length
        for i, text in enumerate(texts):
            progress(i / len(texts), f"text {i + 1} of {len(texts)}")
            vec = task_models.embed(loaded, [text], notes)[0]  # (d_model,)
            cos = (label_vecs @ vec).tolist()
            order = sorted(range(len(labels)), key=lambda j: -cos[j])
            items.append(
                {"text": text, "labels": [labels[j] for j in order], "scores": [cos[j] for j in order],
                 "method": "embedding", "score_name": "cosine similarity"}
            )  # fmt: skip
        return items
    for i, text in enumerate(texts):
        progress(i / len(texts), f"text {i + 1} of {len(texts)}: scoring {len(labels)} labels")
        items.append(task_models.label_logprobs(loaded, text, labels, notes))
    return items


def entities(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text: entities as {label, score, start, end, word}; start/end are character offsets into text."""
    model = head_model(loaded, "AutoModelForTokenClassification")
    fast = getattr(loaded.tokenizer, "is_fast", False)
    pipe = _pipeline("token-classification", model, loaded.tokenizer)
    items = []
    for i, text in enumerate(texts):
        progress(i / len(texts), f"text {i + 1} of {len(texts)}")
        clipped = clip_text(loaded, text, token_limit(loaded), notes)
        out = pipe(clipped, aggregation_strategy="simple" if fast else "none")
        found = []
        for e in out:
            label = e.get("entity_group") or e.get("entity")
            start, end = e.get("start"), e.get("end")
            found.append(
                {"label": str(label), "score": float(e["score"]), "start": start, "end": end,
                 "word": text[start:end] if start is not None and end is not None else str(e.get("word"))}
            )  # fmt: skip
        if not fast:
            notes.append(
                "This tokenizer is not a fast one: entities are single word pieces, without offsets."
            )
        items.append({"text": text, "entities": found, "labels": sorted(set(model.config.id2label.values()))})
    return items


def normalize_mask(loaded: LoadedModel, text: str) -> str:
    """Lets a user write [MASK] or <mask> whatever the model's mask token is."""
    mask = loaded.tokenizer.mask_token
    for generic in ("[MASK]", "<mask>"):
        text = text.replace(generic, mask)
    return text


def fill_mask(loaded: LoadedModel, texts: list[str], given: TaskInput, notes: list[str], progress: Progress):
    """Per text and per mask: the top candidates with their probability (softmax over the vocabulary)."""
    from explorer.analyses.tokens import display_tokens

    model = head_model(loaded, "AutoModelForMaskedLM")
    mask = loaded.tokenizer.mask_token
    top_k = int(given.options.get("top_k", FILL_TOP_K))
    pipe = _pipeline("fill-mask", model, loaded.tokenizer)
    items = []
    for i, text in enumerate(texts):
        progress(i / len(texts), f"text {i + 1} of {len(texts)}")
        text = normalize_mask(loaded, text)
        if mask not in text:
            also = "" if mask == "[MASK]" else " ([MASK] works too)"
            raise TaskError(f"Put {mask}{also} where {loaded.card.name} should fill in a word.")
        clipped = clip_text(loaded, text, token_limit(loaded), notes)
        n_masks = clipped.count(mask)
        if n_masks == 0:
            raise TaskError(
                f"The {mask} lies past the first {token_limit(loaded):,} tokens, which is all the "
                "model reads."
            )
        if n_masks > 5:
            raise TaskError(f"{n_masks} masks: use at most 5 (each is filled independently of the others).")
        out = pipe(clipped, top_k=top_k)
        per_mask = out if n_masks > 1 else [out]
        masks = []
        for cands in per_mask:
            ids = [int(c["token"]) for c in cands]
            shown = display_tokens(loaded.tokenizer, ids)
            masks.append(
                [{"token": tid, "token_str": s, "score": float(c["score"]), "sequence": c["sequence"]}
                 for tid, s, c in zip(ids, shown, cands)]
            )  # fmt: skip
        if n_masks > 1:
            notes.append("With several masks each is predicted on its own, the other masks left in place.")
        items.append({"text": text, "mask": mask, "masks": masks})
    return items
