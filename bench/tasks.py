"""Time of the Tasks page's work on the embedded models: chat on SmolLM2 per token (through
`explorer.tasks.run`, and `model.generate` alone for comparison), zero-shot by prompting SmolLM2, and
similarity on MiniLM. Usage: .venv/bin/python bench/tasks.py. The last line of output is one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from explorer import tasks  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402

NEW_TOKENS = 32
REPEATS = 3


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    smol = load_model(LoadRequest("embedded", "smollm2-135m-instruct", device="cpu"))
    chat_in = tasks.TaskInput(["Tell me a short story about a cat."], options={"max_new_tokens": NEW_TOKENS})
    item = tasks.run(smol, "chat", chat_in).items[0]
    ids = torch.tensor([item["prompt_ids"]])

    def plain() -> None:
        with torch.inference_mode():
            smol.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False
            )

    # Interleaved, so that a change in the machine's load falls on both alike.
    chat_runs, plain_runs = [], []
    for _ in range(REPEATS):
        chat_runs.append(timed(lambda: tasks.run(smol, "chat", chat_in)))
        plain_runs.append(timed(plain))
    chat_s, plain_s = min(chat_runs), min(plain_runs)
    zero_in = tasks.TaskInput(["The team won the cup."], labels=["sport", "politics", "cooking"])
    zero_s = best(lambda: tasks.run(smol, "zero-shot-classification", zero_in))

    minilm = load_model(LoadRequest("embedded", "all-minilm-l6-v2", device="cpu"))
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
                 "A man is riding a horse.", "A monkey is playing drums."]  # fmt: skip
    sim_s = best(lambda: tasks.run(minilm, "sentence-similarity", tasks.TaskInput(sentences)))
    n = item["n_new_tokens"]
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "chat_new_tokens": n,
                "chat_prompt_tokens": len(item["prompt_ids"]),
                "chat_s": round(chat_s, 3),
                "chat_ms_per_token": round(1000 * chat_s / n, 1),
                "generate_alone_ms_per_token": round(1000 * plain_s / n, 1),
                "wrapper_overhead_ratio": round(chat_s / plain_s, 3),
                "chat_runs_s": [round(x, 2) for x in chat_runs],
                "generate_runs_s": [round(x, 2) for x in plain_runs],
                "zero_shot_3_labels_s": round(zero_s, 3),
                "minilm_similarity_5_sentences_s": round(sim_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
