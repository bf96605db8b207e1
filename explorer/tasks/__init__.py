"""The classic NLP tasks on the loaded model: what it can do, and doing it.

`support(loaded, task)` says, without running anything, whether the loaded model can do a task and how
(a trained head, a pipeline, a prompt, embedding similarity) or why not, naming hub models that can.
`run(loaded, task, TaskInput)` does it and returns a `TaskResult` whose `data` is plain JSON.

A task that needs another head class (a classifier, a token classifier, a QA head, a masked-LM head) loads
that class from `LoadedModel.weights_from` once per (request, class) and refuses it when transformers had
to initialize any of its weights: a random head gives noise, not answers. transformers 5.24 has no
question-answering, summarization or translation pipelines: those live in `explorer.tasks.models` on the
model classes; the other tasks go through the pipelines that exist.
"""

from __future__ import annotations

import torch

from explorer.models.loading import LoadedModel
from explorer.tasks.common import (  # the names the pages, the CLI and the tests read here
    ALIASES,
    HEAD_CACHE_SIZE,
    HEADS,
    MAX_CHARS,
    MAX_LINES,
    TASKS,
    Progress,
    Support,
    Task,
    TaskError,
    TaskInput,
    TaskResult,
    architectures,
    cannot,
    check_text,
    checkpoint_names,
    embedding_limit,
    forget_heads,
    head_model,
    is_nli,
    is_sentence_embedder,
    parse_labels,
    split_lines,
    support,
    supported,
    task_name,
    token_limit,
    untrained_head,
)

__all__ = [
    "ALIASES",
    "architectures",
    "cannot",
    "check_text",
    "checkpoint_names",
    "embedding_limit",
    "forget_heads",
    "HEAD_CACHE_SIZE",
    "head_model",
    "HEADS",
    "is_nli",
    "is_sentence_embedder",
    "MAX_CHARS",
    "MAX_LINES",
    "parse_labels",
    "Progress",
    "split_lines",
    "support",
    "Support",
    "supported",
    "Task",
    "task_name",
    "TaskError",
    "TaskInput",
    "TaskResult",
    "TASKS",
    "token_limit",
    "untrained_head",
    "run",
]


def run(loaded: LoadedModel, task: str, given: TaskInput, progress: Progress | None = None) -> TaskResult:
    """Runs `task` on every text of `given`. Raises TaskError for a task the model cannot do or bad input."""
    import time

    from explorer.tasks import models as task_models
    from explorer.tasks import pipelines as task_pipelines

    task = task_name(task)
    progress = progress or (lambda fraction, stage: None)
    found = support(loaded, task)
    if not found.ok:
        raise TaskError(found.how)
    texts = [check_text(t) for t in given.texts]
    if not texts:
        raise TaskError("The text is empty: type or paste some text.")
    if task == "chat" and len(texts) % 2 != 1:
        raise TaskError("A chat alternates user and assistant turns and ends with the user's message.")
    runner = {
        "text-classification": task_pipelines.classify,
        "zero-shot-classification": task_pipelines.zero_shot,
        "token-classification": task_pipelines.entities,
        "fill-mask": task_pipelines.fill_mask,
        "question-answering": task_models.answer,
        "text-generation": task_models.generate_text,
        "chat": task_models.chat,
        "text-to-text": task_models.text_to_text,
        "summarization": task_models.summarize,
        "translation": task_models.translate,
        "feature-extraction": task_models.features,
        "sentence-similarity": task_models.similarity,
        "semantic-search": task_models.search,
    }[task]
    notes: list[str] = []
    started = time.perf_counter()

    def step(fraction: float, stage: str) -> None:  # between two steps: sessions waiting go first
        progress(fraction, stage)
        loaded.lock.yield_turn()

    with loaded.lock, torch.inference_mode():
        items = runner(loaded, texts, given, notes, step)
    return TaskResult(
        task=task,
        model=loaded.card.name,
        how=found.how,
        items=items,
        notes=list(dict.fromkeys(notes)),
        seconds=time.perf_counter() - started,
    )
