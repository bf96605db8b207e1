"""The Tasks page: the classic NLP tasks on the loaded model, each answer drawn as a picture."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from explorer import session, tasks
from explorer.figures import tasks as task_figures
from explorer.models import zoo
from explorer.tasks import models as task_models
from explorer.web.display import md
from views.common import kept, model_or_stop, share

TASK = "tasks_task"
BATCH = "tasks_batch"
RESULT = "tasks_result"  # (LoadRequest, task, TaskResult) of this user's last run
ERROR = "tasks_error"  # (task, message) of this user's last failed run
CHAT = "tasks_chat"  # the chat turns so far: user, assistant, user, ...
CHAT_SENT = "tasks_chat_sent"  # empties the message box on the next run
PICK = "tasks_pick"
ATTENTION_PAGE = "views/attention.py"
PLOT = {"displaylogo": False}

EXAMPLES = {
    "text-classification": "I love this movie, the acting was wonderful.",
    "zero-shot-classification": "The team scored twice in the last ten minutes and won the cup.",
    "token-classification": "My name is Sarah Jones and I work for the United Nations in Geneva.",
    "question-answering": "Where does Sarah work?",
    "fill-mask": "Paris is the [MASK] of France.",
    "text-generation": "Once upon a time, in a small village by the sea,",
    "chat": "What is the capital of France?",
    "summarization": (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
        "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
        "Locally nicknamed the Iron Lady, it was constructed as the centrepiece of the 1889 World's Fair, "
        "and it was the tallest man-made structure in the world until the Chrysler Building was finished "
        "in 1930."
    ),
    "translation": "The cat is sleeping on the sofa.",
    "text-to-text": "translate English to German: The house is wonderful.",
    "feature-extraction": "The cat sat on the mat.",
    "sentence-similarity": (
        "A man is eating food.\nA man is eating a piece of bread.\nThe girl is carrying a baby.\n"
        "A man is riding a horse.\nA monkey is playing drums."
    ),
    "semantic-search": "Which animal likes to play?",
}
CONTEXT_EXAMPLES = {
    "question-answering": (
        "Sarah Jones works for the United Nations in Geneva. She moved there from London in 2019."
    ),
    "semantic-search": (
        "The cat chased a ball of wool across the room.\nStock markets fell sharply on Monday.\n"
        "A new pasta recipe uses lemon and basil.\nThe dog ran to the park to play fetch.\n"
        "Parliament debated the budget until midnight."
    ),
}
DEFAULT_LABELS = "sport, politics, cooking"
GENERATES = ("text-generation", "chat", "text-to-text", "summarization", "translation")


def _text_key(task: str) -> str:
    return f"tasks_text_{task}"


def _context_key(task: str) -> str:
    return f"tasks_context_{task}"


def _kept_key(key: str) -> str:
    return f"{key}_kept"


def _kept(widget, label: str, key: str, default: str, **kwargs) -> str:
    """`st.<widget>` keyed `key`, its value kept under `<key>_kept` (see views.common.kept)."""
    return kept(widget.__name__, label, _kept_key(key), default, box=key, **kwargs)


def _open_attention(text: str, target: str | None, key: str) -> None:
    """A button that opens `text` (and for encoder-decoders `target`) on the Attention page, if any."""
    if not (Path(__file__).resolve().parent / "attention.py").exists():
        return
    if st.button("Open this input on the Attention page", key=f"attn-{key}"):
        st.session_state[session.TEXT] = text
        if target is not None:
            st.session_state[session.TARGET] = target
        else:
            st.session_state.pop(session.TARGET, None)
        st.switch_page(ATTENTION_PAGE)


def _csv_download(rows: list[dict], name: str) -> None:
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download CSV", frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv")


def example(task: str) -> str:
    """The task's example input, fitted to the model: its own mask token, its own job's example."""
    entry = zoo.entry_of(loaded.request)
    if task == "text-to-text" and entry is not None and entry.example:
        return entry.example
    if task == "fill-mask" and loaded.tokenizer.mask_token:
        return EXAMPLES[task].replace("[MASK]", loaded.tokenizer.mask_token)
    return EXAMPLES[task]


def _generation_settings(task: str) -> dict:
    with st.expander("Generation settings", expanded=task in ("text-generation", "chat")):
        cols = st.columns(3)
        default = {"summarization": 60, "translation": 80, "text-to-text": 40}.get(
            task, task_models.DEFAULT_NEW_TOKENS
        )
        options: dict = {
            "max_new_tokens": cols[0].number_input(
                "New tokens (at most)", 1, task_models.MAX_NEW_TOKENS, default, key=f"tasks_new_{task}"
            )
        }
        options["do_sample"] = cols[1].toggle("Sample (off: greedy)", key=f"tasks_sample_{task}")
        if options["do_sample"]:
            options["temperature"] = cols[2].slider(
                "Temperature", 0.05, 2.0, 0.8, 0.05, key=f"tasks_temp_{task}"
            )
            c = st.columns(3)
            options["top_k"] = c[0].number_input("top-k (0: off)", 0, 1000, 50, key=f"tasks_topk_{task}")
            options["top_p"] = c[1].slider("top-p", 0.05, 1.0, 0.95, 0.05, key=f"tasks_topp_{task}")
            options["seed"] = c[2].number_input("Seed", 0, 2**31 - 1, 0, key=f"tasks_seed_{task}")
    return options


def _inputs(loaded, task: str) -> tuple[tasks.TaskInput | None, str | None]:
    """The input widgets of `task`; returns (TaskInput, None) on Run, (None, message) on a bad input."""
    spec = tasks.TASKS[task]
    batch = spec.batch and st.toggle("Several inputs, one per line (results as a table)", key=BATCH)
    labels_text, context, options = "", "", {}
    if task == "chat":
        for i, turn in enumerate(st.session_state.get(CHAT, [])):
            with st.chat_message("user" if i % 2 == 0 else "assistant"):
                st.markdown(md(turn))
    key = _text_key(task)
    if st.session_state.pop(CHAT_SENT, False):
        st.session_state[_kept_key(key)] = ""  # the message went into the chat above
    label = {
        "question-answering": "Question",
        "semantic-search": "Query",
        "sentence-similarity": "Sentences, one per line",
        "chat": "Your message",
        "fill-mask": f"Text with {loaded.tokenizer.mask_token or '[MASK]'} where a word is missing",
    }.get(task, "Text")
    text = _kept(st.text_area, label + (" (one per line)" if batch else ""), key, example(task),
                 height=150 if batch else None)  # fmt: skip
    if task == "zero-shot-classification":
        labels_text = _kept(
            st.text_input, "Candidate labels, comma-separated", "tasks_labels", DEFAULT_LABELS
        )
    if task in CONTEXT_EXAMPLES:
        what = (
            "Context (the passage that holds the answer)"
            if task == "question-answering"
            else "Documents, one per line"
        )
        context = _kept(st.text_area, what, _context_key(task), CONTEXT_EXAMPLES[task], height=150)
    if task == "fill-mask":
        options["top_k"] = st.slider("Candidates", 1, 30, 10, key="tasks_fill_k")
    if task == "translation":
        pairs = task_models.translation_pairs(loaded) if loaded.card.family == "encoder-decoder" else []
        if pairs:
            options["pair"] = st.selectbox("Language pair", pairs, key="tasks_pair")
        elif loaded.card.family == "decoder":
            options["target"] = st.text_input("Into", value=task_models.DEFAULT_TARGET, key="tasks_target")
    if task in GENERATES:
        options.update(_generation_settings(task))
    cols = st.columns([1, 1, 4])
    go = cols[0].button("Send" if task == "chat" else "Run", type="primary", key="tasks_run")
    if session.from_link(session.TASK_RUN):  # a link to an answer: run it, once
        go = go or (bool(st.session_state.get(session.TASK_RUN)) and task != "chat")
        session.checked(session.TASK_RUN)
    if task == "chat" and st.session_state.get(CHAT) and cols[1].button("Clear chat", key="tasks_clear"):
        st.session_state[CHAT] = []
        st.session_state.pop(RESULT, None)
        st.rerun()
    if not go:
        return None, None
    try:
        if batch:
            texts = tasks.split_lines(text)
        elif task == "sentence-similarity":
            texts = tasks.split_lines(text, "list of sentences")
        elif task == "chat":
            texts = list(st.session_state.get(CHAT, [])) + [tasks.check_text(text, "message")]
        else:
            texts = [tasks.check_text(text)]
        if task == "question-answering" and not context.strip():
            raise tasks.TaskError("A question needs a context: paste the passage that holds the answer.")
        return tasks.TaskInput(texts, tasks.parse_labels(labels_text), context, options), None
    except tasks.TaskError as err:
        return None, str(err)


def _run(loaded, task: str, given: tasks.TaskInput) -> None:
    bar = st.progress(0.0, text=f"{tasks.TASKS[task].title} …")

    def progress(fraction: float, stage: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=md(stage))

    try:
        with session.model_turn(loaded, "a task"):
            result = tasks.run(loaded, task, given, progress)
    except tasks.TaskError as err:
        st.session_state[ERROR] = (task, str(err))
        st.session_state.pop(RESULT, None)
        return
    finally:
        bar.empty()
    st.session_state.pop(ERROR, None)
    st.session_state[RESULT] = (loaded.request, task, result)
    if task == "chat":
        st.session_state[CHAT] = given.texts + [result.items[0]["reply"]]
        st.session_state[CHAT_SENT] = True


# --- results -----------------------------------------------------------------------------------------------


def _labels(item: dict, result: tasks.TaskResult, key: str) -> None:
    name = item.get("score_name") or f"probability ({item.get('function', 'softmax')} over the labels)"
    fig = task_figures.label_bars(item["labels"], item["scores"], f"{result.task}: {item['text']}", name)
    st.plotly_chart(fig, config=PLOT, key=f"bars-{key}")
    if item.get("method") == "prompt":
        with st.expander("The prompt, and each label's log-probability"):
            st.code(item["prompt"], language=None, wrap_lines=True)
            st.table(
                [{"label": md(lb), "log-probability": f"{lp:.3f}", "tokens": n}
                 for lb, lp, n in zip(item["labels"], item["logprobs"], item["label_tokens"])]
            )  # fmt: skip
    _open_attention(item["text"], None, key)


def _entities(item: dict, key: str) -> None:
    st.html(task_figures.entity_html(item["text"], item["entities"]))
    if item["entities"]:
        st.table([{"entity": md(e["word"]), "label": md(e["label"]), "score": f"{e['score']:.3f}",
                   "characters": f"{e['start']}–{e['end']}"} for e in item["entities"]])  # fmt: skip
    else:
        st.caption("No entities found.")
    _open_attention(item["text"], None, key)


def _answer(item: dict, key: str) -> None:
    cols = st.columns([3, 1])
    cols[0].markdown(f"**Answer:** {md(item['answer'])}")
    cols[1].metric("Score (p_start × p_end)", f"{item['score']:.3f}")
    st.html(task_figures.span_html(item["context"], item["start"], item["end"], "answer", item["score"]))
    window = f" (window {item['window'] + 1} of {item['n_windows']})" if item["n_windows"] > 1 else ""
    fig = task_figures.qa_token_scores(
        item["tokens"], item["start_probs"], item["end_probs"], item["start_token"], item["end_token"],
        f"Start and end probabilities over the context tokens{window}",
    )  # fmt: skip
    st.plotly_chart(fig, config=PLOT, key=f"qa-{key}")
    _open_attention(f"{item['question']} {item['context']}", None, key)


def _fill(item: dict, key: str) -> None:
    for m, cands in enumerate(item["masks"]):
        title = f"Mask {m + 1}: the top {len(cands)} of the vocabulary"
        st.plotly_chart(task_figures.fill_mask_bars(cands, title), config=PLOT, key=f"fill-{key}-{m}")
        st.caption(f"Best: {md(cands[0]['sequence'])}")
    _open_attention(
        item["text"].replace(item["mask"], item["masks"][0][0]["token_str"].replace("␣", " ").strip()),
        None,
        key,
    )


def _generated(loaded, item: dict, task: str, key: str) -> None:
    if task == "text-generation":
        st.code(item["prompt"] + item["generated"], language=None, wrap_lines=True)
        attention, target = item["prompt"] + item["generated"], None
    else:
        name = {"summarization": "Summary", "translation": "Translation"}.get(task, "Output")
        st.markdown(f"**{name}** ({md(item['method'])}"
                    f"{', ' + md(item['direction']) if item.get('direction') else ''}):")  # fmt: skip
        st.code(item["output"], language=None, wrap_lines=True)
        with st.expander("What the model was given"):
            st.code(item["prompt"], language=None, wrap_lines=True)
        if loaded.card.family == "encoder-decoder":
            attention, target = item["prompt"], item["output"]
        else:
            attention, target = item["prompt"] + item["output"], None
    _generation_caption(item)
    _open_attention(attention, target, key)


def _generation_caption(item: dict) -> None:
    s = item["settings"]
    how = (
        f"sampling, temperature {s['temperature']}, top-k {s['top_k']}, top-p {s['top_p']}, seed {s['seed']}"
        if s["do_sample"] else "greedy"
    )  # fmt: skip
    st.caption(
        f"{item['n_new_tokens']} new tokens ({how}, at most {s['max_new_tokens']}; stopped at "
        f"{item['stopped']}) in {item['seconds']:.2f} s: {1000 * item['seconds_per_token']:.0f} ms per token."
    )


def _features(item: dict, key: str) -> None:
    pos, d_model = item["shape"]
    cols = st.columns(3)
    cols[0].metric("Tokens (pos)", pos)
    cols[1].metric("d_model", d_model)
    cols[2].metric("Mean vector norm", f"{sum(item['norms']) / len(item['norms']):.2f}")
    fig = task_figures.feature_heatmap(
        item["tokens"], item["vectors"], "Last hidden state: one row per token"
    )
    st.plotly_chart(fig, config=PLOT, key=f"feat-{key}")
    rows = [
        {"token": t, **{f"d{j}": v for j, v in enumerate(vec)}}
        for t, vec in zip(item["tokens"], item["vectors"])
    ]
    st.download_button("Download the vectors (CSV)", pd.DataFrame(rows).to_csv(index=False),
                       file_name="features.csv", mime="text/csv", key=f"featcsv-{key}")  # fmt: skip
    _open_attention(item["text"], None, key)


def _similarity(item: dict, key: str) -> None:
    fig = task_figures.similarity_heatmap(
        item["sentences"], item["matrix"], "Cosine similarity of the sentence embeddings"
    )
    st.plotly_chart(fig, config=PLOT, key=f"sim-{key}")
    _open_attention("\n".join(item["sentences"]), None, key)


def _search(item: dict, key: str) -> None:
    st.plotly_chart(
        task_figures.search_bars(item["ranking"], f"Query: {item['query']}"), config=PLOT, key=f"search-{key}"
    )
    st.dataframe(
        pd.DataFrame(item["ranking"])[["rank", "score", "document"]], hide_index=True, width="stretch"
    )
    _open_attention(item["query"], None, key)


def _batch_rows(task: str, items: list[dict]) -> list[dict]:
    rows = []
    for i, it in enumerate(items):
        row = {"#": i + 1, "input": it.get("text") or it.get("prompt") or it.get("question")}
        if "labels" in it and "scores" in it:
            row.update({"label": it["labels"][0], "score": it["scores"][0]})
            row.update({f"score: {lb}": sc for lb, sc in zip(it["labels"], it["scores"])})
        elif task == "token-classification":
            row["entities"] = "; ".join(
                f"{e['word']} ({e['label']} {e['score']:.2f})" for e in it["entities"]
            )
        elif task == "question-answering":
            row.update({"answer": it["answer"], "score": it["score"], "start": it["start"], "end": it["end"]})
        elif task == "fill-mask":
            row.update({"best": it["masks"][0][0]["token_str"], "probability": it["masks"][0][0]["score"]})
        elif task in ("text-to-text", "summarization", "translation"):
            row.update({"output": it["output"], "tokens": it["n_new_tokens"], "seconds": it["seconds"]})
        elif task == "text-generation":
            row.update({"generated": it["generated"], "tokens": it["n_new_tokens"], "seconds": it["seconds"]})
        elif task == "feature-extraction":
            row.update(
                {
                    "tokens": it["shape"][0],
                    "d_model": it["shape"][1],
                    "mean norm": sum(it["norms"]) / len(it["norms"]),
                }
            )
        rows.append(row)
    return rows


def _show(loaded, task: str, result: tasks.TaskResult) -> None:
    st.caption(f"{md(result.model)}, {md(result.how)}; {result.seconds:.2f} s.")
    for note in result.notes:
        st.warning(md(note))
    items = result.items
    if task == "chat":
        return  # the turns are drawn above the message box
    if len(items) > 1:
        st.subheader(f"{len(items)} inputs")
        _csv_download(_batch_rows(task, items), task)
        inputs = [str(row["input"])[:80] for row in _batch_rows(task, items)]
        pick = st.selectbox(
            "Show the picture for", range(len(items)), key=PICK, format_func=lambda i: f"{i + 1}. {inputs[i]}"
        )
        item, key = items[pick], f"{task}-{pick}"
    else:
        item, key = items[0], f"{task}-0"
    if task in ("text-classification", "zero-shot-classification"):
        _labels(item, result, key)
    elif task == "token-classification":
        _entities(item, key)
    elif task == "question-answering":
        _answer(item, key)
    elif task == "fill-mask":
        _fill(item, key)
    elif task in ("text-generation", "text-to-text", "summarization", "translation"):
        _generated(loaded, item, task, key)
    elif task == "feature-extraction":
        _features(item, key)
    elif task == "sentence-similarity":
        _similarity(item, key)
    else:
        _search(item, key)


# --- the page ----------------------------------------------------------------------------------------------

st.title("Tasks")
loaded = model_or_stop()

card = loaded.card
available = tasks.supported(loaded)
st.caption(
    f"What {md(card.name)} ({card.family}) can do, run on your text. Encoders classify, tag entities, "
    "answer by pointing into a passage and fill masks; decoders generate and chat; encoder-decoders "
    "summarize and translate."
)
with st.expander(f"Every task and whether {md(card.name)} can do it"):
    rows = [
        {"task": md(t.title), "can it?": "yes" if available[n].ok else "no",
         "how, or why not": md(available[n].how), "suits": md(t.suits)}
        for n, t in tasks.TASKS.items()
    ]  # fmt: skip
    st.table(rows, hide_index=True)

names = list(tasks.TASKS)
first = next((n for n in names if available[n].ok), names[0])  # a first visit opens on a task it can do
task = _kept(
    st.selectbox,
    "Task",
    TASK,
    first,
    options=names,
    format_func=lambda n: f"{'✓' if available[n].ok else '✗'} {tasks.TASKS[n].title}",
)
text_key = _kept_key(_text_key(task))
if session.from_link(session.TASK_TEXT):  # a link's text goes in its task's box
    st.session_state[text_key] = st.session_state[session.TASK_TEXT]
    session.checked(session.TASK_TEXT)
share(session.TASK_CHOICE, session.TASK_TEXT, **{session.TASK_TEXT: st.session_state.get(text_key)})
spec, found = tasks.TASKS[task], available[task]
st.caption(f"Suits {md(spec.suits)}.")
if not found.ok:
    st.error(f"{md(card.name)} cannot do {md(spec.title.lower())}: {md(found.how)}")
    st.stop()
st.info(f"How: {md(found.how)}.")
given, problem = _inputs(loaded, task)
if problem is not None:
    st.session_state[ERROR] = (task, problem)
    st.session_state.pop(RESULT, None)
elif given is not None:
    _run(loaded, task, given)
    if task == "chat" and ERROR not in st.session_state:
        st.rerun()

error = st.session_state.get(ERROR)
if error and error[0] == task:
    st.error(md(error[1]))
last = st.session_state.get(RESULT)
if last and last[0] == loaded.request and last[1] == task:
    _show(loaded, task, last[2])
    if task != "chat":  # the link runs the task again on its text, so that it opens on this answer
        share(session.TASK_CHOICE, session.TASK_TEXT, session.TASK_RUN,
              **{session.TASK_TEXT: st.session_state.get(text_key), session.TASK_RUN: True})  # fmt: skip
    if task == "chat":
        _generation_caption(last[2].items[0])
        _open_attention(last[2].items[0]["prompt"] + last[2].items[0]["reply"], None, "chat")
