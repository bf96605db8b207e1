"""What the task modules share: the tasks, their support per model, inputs and results, the head-model
cache and the text checks. It sits below the dispatcher (`explorer.tasks.run`) and the modules it
calls (`models`, `pipelines`), which import from here: no import circle."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from explorer.errors import ExplorerError, first_line
from explorer.models.loading import LoadedModel, LoadRequest

Progress = Callable[[float, str], None]  # (fraction done, what is happening)

MAX_CHARS = 50_000  # one input; a longer paste is refused with a message
MAX_LINES = 200  # batch inputs
HEAD_CACHE_SIZE = 4


class TaskError(ExplorerError):
    """The task cannot run on this model or input; `str(err)` is a sentence fit for the page."""


@dataclass(frozen=True)
class Task:
    name: str  # as transformers names it where it has a name
    title: str
    suits: str  # which kind of model does it
    examples: tuple[str, ...]  # hub models that do it
    batch: bool = True  # one input per line makes sense


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "text-classification",
            "Text classification / sentiment",
            "an encoder with a trained classification head (BERT, DistilBERT, RoBERTa fine-tuned on labels)",
            ("distilbert-base-uncased-finetuned-sst-2-english", "cardiffnlp/twitter-roberta-base-sentiment"),
        ),
        Task(
            "zero-shot-classification",
            "Zero-shot classification",
            "an NLI classifier (BART or DeBERTa fine-tuned on MNLI), a sentence-embedding encoder, or an "
            "instruct decoder asked to choose",
            ("facebook/bart-large-mnli", "all-minilm-l6-v2 (embedded)", "smollm2-135m-instruct (embedded)"),
        ),
        Task(
            "token-classification",
            "Named entities (token classification)",
            "an encoder with a trained token-classification head",
            ("dslim/bert-base-NER", "dbmdz/bert-large-cased-finetuned-conll03-english"),
        ),
        Task(
            "question-answering",
            "Extractive question answering",
            "an encoder with a trained span head: it points at the answer inside the context",
            ("distilbert-base-cased-distilled-squad", "deepset/roberta-base-squad2"),
        ),
        Task(
            "fill-mask",
            "Fill the mask",
            "an encoder trained with masked-language modelling, with its prediction head",
            ("bert-base-uncased", "distilroberta-base"),
        ),
        Task(
            "text-generation",
            "Text generation",
            "a decoder (GPT-2, Llama, Gemma, SmolLM2): it continues the text",
            ("gpt2", "smollm2-135m-instruct (embedded)", "gemma-3-270m (embedded)"),
        ),
        Task(
            "chat",
            "Chat",
            "an instruct decoder with a chat template",
            ("smollm2-135m-instruct (embedded)", "HuggingFaceTB/SmolLM2-360M-Instruct"),
            batch=False,
        ),
        Task(
            "text-to-text",
            "Text to text",
            "an encoder-decoder: the encoder reads the text, the decoder writes what it was trained to "
            "write (the date normalizer: the date as YYYY-MM-DD; T5: the task its prefix names)",
            ("date-normalizer (embedded)", "t5-small ('translate English to German: ...')"),
        ),
        Task(
            "summarization",
            "Summarization",
            "an encoder-decoder trained to summarize (BART-CNN, T5); an instruct decoder can be prompted",
            ("facebook/bart-large-cnn", "t5-small", "smollm2-135m-instruct (embedded, by prompting)"),
        ),
        Task(
            "translation",
            "Translation",
            "an encoder-decoder trained on a language pair (Marian, T5); an instruct decoder can be prompted",
            ("Helsinki-NLP/opus-mt-en-de", "t5-small"),
        ),
        Task(
            "feature-extraction",
            "Feature extraction (token vectors)",
            "any model: the last hidden state, one vector per token (an encoder's are the usual choice)",
            ("all-minilm-l6-v2 (embedded)", "bert-base-uncased"),
        ),
        Task(
            "sentence-similarity",
            "Sentence similarity",
            "a sentence-embedding encoder (sentence-transformers: mean pooling, normalized)",
            ("all-minilm-l6-v2 (embedded)", "sentence-transformers/all-mpnet-base-v2"),
            batch=False,
        ),
        Task(
            "semantic-search",
            "Semantic search",
            "a sentence-embedding encoder: documents ranked by cosine similarity to the query",
            ("all-minilm-l6-v2 (embedded)", "sentence-transformers/multi-qa-MiniLM-L6-cos-v1"),
            batch=False,
        ),
    ]
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}

# The head class each head task loads, and the architecture suffix that says a checkpoint has it.
HEADS = {
    "text-classification": ("AutoModelForSequenceClassification", "ForSequenceClassification"),
    "token-classification": ("AutoModelForTokenClassification", "ForTokenClassification"),
    "question-answering": ("AutoModelForQuestionAnswering", "ForQuestionAnswering"),
    "fill-mask": ("AutoModelForMaskedLM", "ForMaskedLM"),
}


@dataclass(frozen=True)
class Support:
    ok: bool
    how: str  # how the task is done on this model (when ok) or why it cannot be (when not)


@dataclass
class TaskInput:
    """What a user gives a task. `texts` has one item per input (a batch has several)."""

    texts: list[str]
    labels: list[str] = field(default_factory=list)  # zero-shot candidates
    context: str = ""  # question answering: the passage; semantic search: documents, one per line
    options: dict[str, Any] = field(default_factory=dict)  # max_new_tokens, temperature, top_k, target ...


@dataclass
class TaskResult:
    """One task run: `data` holds one JSON-ready dict per input (its keys depend on the task)."""

    task: str
    model: str
    how: str
    items: list[dict]
    notes: list[str] = field(default_factory=list)  # truncations and other things a user should know
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def task_name(name: str) -> str:
    """The canonical name for `name` (aliases such as sentiment-analysis and ner included)."""
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in TASKS:
        raise TaskError(f"Unknown task {name!r}. Tasks: {', '.join(TASKS)}.")
    return name


def architectures(loaded: LoadedModel) -> list[str]:
    """The class names the checkpoint declares, plus the class it was loaded as."""
    names = list(getattr(loaded.model.config, "architectures", None) or [])
    return names + [type(loaded.model).__name__]


def is_sentence_embedder(loaded: LoadedModel) -> bool:
    """A sentence-transformers checkpoint (modules.json beside the weights) pools into sentence vectors."""
    from pathlib import Path

    return (Path(loaded.weights_from) / "modules.json").exists()


def is_nli(loaded: LoadedModel) -> bool:
    """A sequence classifier whose labels include entailment: zero-shot by natural-language inference."""
    labels = {str(v).lower() for v in (getattr(loaded.model.config, "id2label", None) or {}).values()}
    declares = any(a.endswith("ForSequenceClassification") for a in architectures(loaded))
    return declares and "entailment" in labels


def cannot(task: str, reason: str) -> Support:
    examples = ", ".join(TASKS[task].examples)
    return Support(False, f"{reason} Models that do it: {examples}.")


def support(loaded: LoadedModel, task: str) -> Support:
    """Whether the loaded model can do `task`, and how (or why not). Cheap: nothing is loaded or run."""
    task = task_name(task)
    family = loaded.card.family
    archs = architectures(loaded)
    if task in HEADS:
        suffix = HEADS[task][1]
        if any(a.endswith(suffix) for a in archs):
            if task == "fill-mask" and loaded.tokenizer.mask_token is None:
                return cannot(task, "Its tokenizer has no mask token.")
            how = {
                "text-classification": "with its trained classification head (text-classification pipeline)",
                "token-classification": "with its trained token-classification head (token-classification "
                "pipeline, word pieces grouped into entities)",
                "question-answering": "with its trained span head: start and end scores over context tokens",
                "fill-mask": "with its masked-language-model head (the fill-mask pipeline)",
            }[task]
            return Support(True, how)
        declared = ", ".join(dict.fromkeys(archs))
        return cannot(
            task,
            f"{loaded.card.name} has no trained {suffix[3:]} head (its checkpoint is {declared}); loading "
            "one would give a randomly initialized head, whose output is noise.",
        )
    if task == "zero-shot-classification":
        if is_nli(loaded):
            return Support(
                True,
                "by natural-language inference: each label as the hypothesis 'This example is {label}.', "
                "scored by the entailment logit (the zero-shot-classification pipeline)",
            )
        if family == "encoder":
            return Support(True, "by embedding similarity: cosine between the mean-pooled, normalized "
                           "embeddings of the text and of each label (not probabilities)")  # fmt: skip
        if family == "decoder":
            prompt = "under its chat template" if loaded.card.chat_template else "after a plain prompt"
            return Support(
                True,
                f"by prompting: the log-probability of each label as the model's answer {prompt} (begun "
                "with 'The label that fits best is'), normalized over the labels",
            )
        return cannot(task, f"{loaded.card.name} is an encoder-decoder without an NLI head.")
    if task == "text-generation":
        if family == "decoder":
            return Support(True, "by generating one token after another (model.generate)")
        return cannot(task, f"{loaded.card.name} is an {family}: it does not continue text.")
    if task == "chat":
        if family != "decoder":
            return cannot(task, f"{loaded.card.name} is an {family}, not a chat model.")
        if not loaded.card.chat_template:
            return cannot(
                task,
                f"{loaded.card.name} has no chat template (a base model, not trained on conversations); "
                "use text generation.",
            )
        return Support(True, "under its chat template, generating the assistant's reply")
    job = own_job(loaded)
    if task == "text-to-text":
        if family != "encoder-decoder":
            return cannot(task, f"{loaded.card.name} is an {family}, not an encoder-decoder.")
        done = f"its output (its one job: {job})" if job else "its output"
        return Support(True, f"the encoder reads the text, the decoder writes {done} (model.generate)")
    if task in ("summarization", "translation") and job:
        return cannot(
            task, f"{loaded.card.name} was trained for one job only, {job}; 'Text to text' runs it."
        )
    if task in ("summarization", "translation"):
        if family == "encoder-decoder":
            output = "summary" if task == "summarization" else "translation"
            return Support(
                True,
                f"sequence-to-sequence: the encoder reads the text, the decoder writes the {output} "
                "(model.generate)",
            )
        if family == "decoder":
            if loaded.card.chat_template:
                return Support(True, "by prompting this instruct decoder under its chat template (it was not "
                               f"trained for {task} as such)")  # fmt: skip
            return Support(True, "by prompting this base decoder with a plain text pattern (weak: it was "
                           f"not trained for {task})")  # fmt: skip
        return cannot(task, f"{loaded.card.name} is an encoder: it cannot write text.")
    if task == "feature-extraction":
        part = "the encoder's" if family == "encoder-decoder" else "the"
        return Support(True, f"{part} last hidden state, one d_model vector per token")
    # sentence-similarity, semantic-search
    if is_sentence_embedder(loaded):
        return Support(True, "mean pooling of the last hidden state over the tokens, then L2-normalized, as "
                       "sentence-transformers does; cosine similarity")  # fmt: skip
    return Support(
        True,
        "mean pooling of the last hidden state, L2-normalized, cosine similarity. Caution: "
        f"{loaded.card.name} was not trained as a sentence embedder, so similarities mean little",
    )


def own_job(loaded: LoadedModel) -> str | None:
    """The one job an embedded model was trained for (explorer.models.zoo), if it has one."""
    from explorer.models import zoo

    entry = zoo.entry_of(loaded.request)
    return entry.job if entry is not None else None


def supported(loaded: LoadedModel) -> dict[str, Support]:
    return {name: support(loaded, name) for name in TASKS}


# --- head models -------------------------------------------------------------------------------------------

_heads: OrderedDict[tuple[LoadRequest, str], Any] = OrderedDict()
_heads_guard = threading.Lock()


def head_model(loaded: LoadedModel, auto_class: str):
    """The model under `auto_class` (e.g. "AutoModelForMaskedLM"): the shared model when it already is
    that class, else loaded once per (request, class) and cached. Raises TaskError when loading would
    initialize any weight (a head the checkpoint does not have); the refusal is cached too."""
    import transformers

    cls = getattr(transformers, auto_class)
    mapping = getattr(cls, "_model_mapping", None)
    wanted = mapping.get(type(loaded.model.config), None) if mapping is not None else None
    if wanted is not None and isinstance(loaded.model, wanted):
        # The shared load used the config's architecture: check its head was in the checkpoint.
        missing = untrained_head(loaded.model, checkpoint_names(loaded))
        if missing:
            raise _fresh_error(loaded, type(loaded.model).__name__, missing)
        return loaded.model
    key = (loaded.request, auto_class)
    with _heads_guard:
        if key in _heads:
            _heads.move_to_end(key)
            found = _heads[key]
            if isinstance(found, TaskError):
                raise found
            return found
    result = _load_head(loaded, cls, auto_class)
    with _heads_guard:
        _heads[key] = result
        while len(_heads) > HEAD_CACHE_SIZE:
            _heads.popitem(last=False)
    if isinstance(result, TaskError):
        raise result
    return result


def forget_heads(request: LoadRequest | None = None) -> None:
    """Drops cached head models (of one request, or all)."""
    with _heads_guard:
        for key in [k for k in _heads if request is None or k[0] == request]:
            del _heads[key]


def _load_head(loaded: LoadedModel, cls, auto_class: str):
    kwargs: dict[str, Any] = dict(
        dtype=loaded.model.dtype,
        attn_implementation="eager",
        trust_remote_code=loaded.request.trust_remote_code,
        output_loading_info=True,
    )
    if loaded.request.source == "hub":
        kwargs["local_files_only"] = True  # the shared load already fetched the files
    device = loaded.model.device
    if device.type != "cpu":
        kwargs["device_map"] = str(device)
    try:
        model, info = cls.from_pretrained(loaded.weights_from, **kwargs)
    except ValueError as err:  # the config has no class for this head
        return TaskError(
            f"{loaded.card.name} has no {auto_class[12:]} variant in transformers: {first_line(err)}"
        )
    except Exception as err:
        return TaskError(
            f"The {auto_class[12:]} head of {loaded.card.name} cannot be loaded: {first_line(err)}"
        )
    fresh = sorted(set(info.get("missing_keys") or ()) | {k for k, *_ in info.get("mismatched_keys") or ()})
    if fresh:
        return _fresh_error(loaded, type(model).__name__, fresh)
    model.eval()
    model.requires_grad_(False)
    return model


def _fresh_error(loaded: LoadedModel, class_name: str, fresh: list[str]) -> TaskError:
    shown = ", ".join(fresh[:4]) + (f" and {len(fresh) - 4} more" if len(fresh) > 4 else "")
    return TaskError(
        f"{loaded.card.name} cannot do this: its checkpoint has no weights for {shown}, so {class_name} "
        "starts them at random and its output would be noise."
    )


def checkpoint_names(loaded: LoadedModel) -> set[str] | None:
    """The tensor names in the checkpoint's safetensors files (headers only), or None when the weights
    are not local safetensors (then nothing can be checked without loading)."""
    import json
    import struct
    from pathlib import Path

    folder = Path(loaded.weights_from)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            names |= {k for k in json.loads(f.read(size)) if k != "__metadata__"}
    return names


def untrained_head(model, names: set[str] | None) -> list[str]:
    """Parameters outside the base model (the head) that the checkpoint does not hold. Tied parameters
    appear once in named_parameters, under the base model's name, so a tied decoder is not listed."""
    if names is None:
        return []
    prefix = getattr(model, "base_model_prefix", "") + "."
    head = [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
    return sorted(n for n in head if not any(a in names for a in _stored_as(n, prefix)))


def _stored_as(name: str, prefix: str) -> list[str]:
    """Names a checkpoint may store `name` under: with or without the base model's prefix, and the
    LayerNorm `gamma`/`beta` of old checkpoints (bert-base-uncased), which transformers renames on load."""
    forms = [name]
    if name.endswith(".weight"):
        forms.append(name[: -len("weight")] + "gamma")
    elif name.endswith(".bias"):
        forms.append(name[: -len("bias")] + "beta")
    return forms + [prefix + f for f in forms]


# --- inputs ------------------------------------------------------------------------------------------------


def check_text(text: str, what: str = "text") -> str:
    """`text` stripped; TaskError for empty text or a paste longer than MAX_CHARS."""
    if len(text) > MAX_CHARS:
        raise TaskError(
            f"The {what} is {len(text):,} characters long; this page takes at most {MAX_CHARS:,} per input. "
            "Paste a shorter passage."
        )
    text = text.strip()
    if not text:
        raise TaskError(f"The {what} is empty: type or paste some text.")
    return text


def split_lines(text: str, what: str = "text") -> list[str]:
    """Non-empty lines of a batch box, each checked; TaskError when there are none or too many."""
    if len(text) > MAX_CHARS * 4:
        raise TaskError(
            f"The {what} is {len(text):,} characters long; this page takes at most {MAX_CHARS * 4:,} "
            "in a batch."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise TaskError(f"The {what} is empty: type or paste some text, one input per line.")
    if len(lines) > MAX_LINES:
        raise TaskError(f"{len(lines)} lines: a batch takes at most {MAX_LINES}.")
    return [check_text(line, what) for line in lines]


def parse_labels(text: str) -> list[str]:
    """Candidate labels from a comma-separated string, without blanks and repeats."""
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def token_limit(loaded: LoadedModel) -> int | None:
    """The most tokens the model reads at once: the tokenizer's limit, the config's positions, and for a
    sentence-transformers model its max_seq_length, whichever is smallest; None when nothing limits it."""
    limits = []
    tok_max = getattr(loaded.tokenizer, "model_max_length", None)
    if tok_max and tok_max < 10**7:
        limits.append(int(tok_max))
    if loaded.card.context_length:
        limits.append(int(loaded.card.context_length))
    return min(limits) if limits else None


def embedding_limit(loaded: LoadedModel) -> int | None:
    """sentence-transformers truncates at the max_seq_length of sentence_bert_config.json (256 for MiniLM)."""
    import json
    from pathlib import Path

    limit = token_limit(loaded)
    config = Path(loaded.weights_from) / "sentence_bert_config.json"
    if config.exists():
        seq = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(seq, int):
            limit = min(limit, seq) if limit else seq
    return limit


# --- running -----------------------------------------------------------------------------------------------
