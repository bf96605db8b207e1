"""The NLP tasks on tiny models built from configs: each checks the shape and sense of the output, and that a
head the checkpoint lacks is refused instead of run at random."""

from __future__ import annotations

import json

import pytest
import torch

from explorer import tasks
from explorer.figures import tasks as task_figures
from explorer.models.loading import LoadRequest, load_model
from explorer.tasks import TaskError, TaskInput
from explorer.tasks import common as task_common
from tests.conftest import tiny_config, tiny_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s>{% endfor %}"
    "{% if add_generation_prompt %}<s> assistant{% endif %}"
)


def _save(folder, cls_name: str, kind: str = "bert", tokenizer=None, **config_changes):
    import transformers as tf

    torch.manual_seed(0)
    config = tiny_config(kind)
    for k, v in config_changes.items():
        setattr(config, k, v)
    model = getattr(tf, cls_name)(config)
    model.save_pretrained(folder)
    (tokenizer or tiny_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_dir):
    """kind -> a LoadedModel of a tiny checkpoint, each saved and loaded once per module."""
    made: dict[str, object] = {}
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    ner = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    nli = {0: "contradiction", 1: "neutral", 2: "entailment"}
    chat_tok = tiny_tokenizer()
    chat_tok.chat_template = CHAT_TEMPLATE
    builders = {
        "classifier": lambda d: _save(d, "BertForSequenceClassification", id2label=labels,
                                      label2id={v: k for k, v in labels.items()}),
        "ner": lambda d: _save(d, "BertForTokenClassification", id2label=ner,
                               label2id={v: k for k, v in ner.items()}),
        "nli": lambda d: _save(d, "BertForSequenceClassification", id2label=nli,
                               label2id={v: k for k, v in nli.items()}),
        "qa": lambda d: _save(d, "BertForQuestionAnswering"),
        "base": lambda d: _save(d, "BertModel"),
        "chat": lambda d: _save(d, "LlamaForCausalLM", "llama", tokenizer=chat_tok),
        "t5": lambda d: _save(d, "T5ForConditionalGeneration", "t5", task_specific_params={
            "summarization": {"prefix": "summarize: ", "num_beams": 2, "min_length": 3},
            "translation_en_to_de": {"prefix": "translate English to German: "},
            "translation_en_to_fr": {"prefix": "translate English to French: "}}),
    }  # fmt: skip

    def get(kind: str):
        if kind not in made:
            if kind in builders:
                folder = builders[kind](tmp_path_factory.mktemp(f"task-{kind}"))
            else:  # bert (masked LM), gpt2, llama, bart from conftest
                folder = tiny_dir(kind)
            made[kind] = load_model(LoadRequest("folder", str(folder), device="cpu"))
        return made[kind]

    yield get
    tasks.forget_heads()


def run(loaded, task, texts, **kw):
    return tasks.run(loaded, task, TaskInput(list(texts), **kw))


# --- what a model can do -----------------------------------------------------------------------------------


def test_support_follows_the_family_and_the_head(tiny):
    bert, base, gpt2, t5 = tiny("bert"), tiny("base"), tiny("gpt2"), tiny("t5")
    assert tasks.support(bert, "fill-mask").ok and not tasks.support(bert, "text-classification").ok
    assert not tasks.support(base, "fill-mask").ok
    assert tasks.support(gpt2, "text-generation").ok and not tasks.support(gpt2, "question-answering").ok
    assert not tasks.support(gpt2, "chat").ok  # no chat template
    assert "no chat template" in tasks.support(gpt2, "chat").how
    assert tasks.support(tiny("chat"), "chat").ok
    assert tasks.support(t5, "summarization").ok and tasks.support(t5, "translation").ok
    assert tasks.support(t5, "text-to-text").ok and not tasks.support(gpt2, "text-to-text").ok
    assert not tasks.support(t5, "text-generation").ok
    refusal = tasks.support(bert, "token-classification").how
    assert "dslim/bert-base-NER" in refusal  # names hub models that can
    assert tasks.task_name("sentiment-analysis") == "text-classification" and tasks.task_name("ner") == (
        "token-classification"
    )
    with pytest.raises(TaskError, match="Unknown task"):
        tasks.task_name("juggling")


def test_a_missing_head_is_refused_not_initialized(tiny, monkeypatch):
    base = tiny("base")  # BertModel weights: no cls.* and no classifier
    loads = []
    real = task_common._load_head
    monkeypatch.setattr(task_common, "_load_head", lambda *a: loads.append(a[2]) or real(*a))
    for _ in range(2):
        with pytest.raises(TaskError, match="cls.predictions") as err:
            tasks.head_model(base, "AutoModelForMaskedLM")
    assert "noise" in str(err.value)
    assert loads == ["AutoModelForMaskedLM"]  # the refusal is cached: one load for two clicks


def test_a_config_that_claims_a_head_its_weights_lack_is_refused(tmp_path):
    folder = _save(tmp_path, "BertModel")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]  # the config lies; the weights have no head
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(LoadRequest("folder", str(folder), device="cpu"))
    assert tasks.support(loaded, "text-classification").ok  # the config alone says yes
    with pytest.raises(TaskError, match="classifier"):
        run(loaded, "text-classification", ["the cat sat"])
    tasks.forget_heads(loaded.request)


# --- heads -------------------------------------------------------------------------------------------------


def test_classification_scores_are_the_softmax_of_the_logits(tiny):
    loaded = tiny("classifier")
    text = "the cat sat on the mat"
    item = run(loaded, "text-classification", [text]).items[0]
    assert sorted(item["labels"]) == ["negative", "neutral", "positive"]
    assert item["scores"] == sorted(item["scores"], reverse=True)
    assert sum(item["scores"]) == pytest.approx(1.0, abs=1e-5)
    enc = loaded.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probs = loaded.model(**enc).logits[0].softmax(-1)
    expected = {loaded.model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    assert dict(zip(item["labels"], item["scores"])) == pytest.approx(expected, abs=1e-5)


def test_an_over_long_text_is_cut_with_a_note(tiny):
    loaded = tiny("classifier")  # 64 positions
    result = run(loaded, "text-classification", ["the cat sat " * 60])
    assert any("180 tokens" in n and "at most 64" in n for n in result.notes)
    assert sum(result.items[0]["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_entities_map_back_to_the_text(tiny):
    loaded = tiny("ner")
    head = tasks.head_model(loaded, "AutoModelForTokenClassification")
    assert head is loaded.model  # the shared model already is the token classifier
    text = "the  cat sat on the mat in park"
    with torch.no_grad():  # make every token a B-LOC, 4 logits above the rest
        bias = head.classifier.bias.clone()
        head.classifier.weight.zero_()
        head.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 4.0, 0.0]))
    try:
        item = run(loaded, "token-classification", [text]).items[0]
    finally:
        with torch.no_grad():
            head.classifier.bias.copy_(bias)
    words = text.split()
    assert [e["word"] for e in item["entities"]] == words
    for e in item["entities"]:
        assert text[e["start"] : e["end"]] == e["word"] and e["label"] == "LOC"
        assert e["score"] == pytest.approx(torch.tensor([0.0, 0, 0, 4, 0]).softmax(-1)[3].item(), abs=1e-5)


def _brute_force_best(start_probs, end_probs, longest):
    pairs = [
        (s * e, i, j)
        for i, s in enumerate(start_probs)
        for j, e in enumerate(end_probs)
        if i <= j < i + longest
    ]
    return max(pairs)


def test_question_answering_span_lies_inside_the_context(tiny):
    from explorer.tasks.models import QA_MAX_ANSWER_TOKENS

    loaded = tiny("qa")
    context = "the cat sat on the mat because it was tired"
    result = run(loaded, "question-answering", ["where is the cat"], context=context)
    item = result.items[0]
    assert 0 <= item["start"] < item["end"] <= len(context)
    assert item["answer"] == context[item["start"] : item["end"]] != ""
    assert sum(item["start_probs"]) == pytest.approx(1.0, abs=1e-5)
    assert sum(item["end_probs"]) == pytest.approx(1.0, abs=1e-5)
    assert [context[a:b] for a, b in item["offsets"]] == item["tokens"] == context.split()
    score, s, e = _brute_force_best(item["start_probs"], item["end_probs"], QA_MAX_ANSWER_TOKENS)
    assert (item["start_token"], item["end_token"]) == (s, e) and item["score"] == pytest.approx(score)


def test_question_answering_reads_a_long_context_in_windows(tiny):
    loaded = tiny("qa")  # 64 positions: this context needs several windows
    context = " ".join(["the dog ran to park and then slept"] * 20)
    result = run(loaded, "question-answering", ["where is the dog"], context=context)
    item = result.items[0]
    assert item["n_windows"] > 1 and any("windows" in n for n in result.notes)
    assert item["answer"] == context[item["start"] : item["end"]]
    assert all(context[a:b] == t for (a, b), t in zip(item["offsets"], item["tokens"]))


def test_question_without_context_gets_a_message(tiny):
    with pytest.raises(TaskError, match="needs a context"):
        run(tiny("qa"), "question-answering", ["where is the cat"], context="  ")


def test_fill_mask_probabilities_are_the_softmax_at_the_mask(tiny):
    loaded = tiny("bert")
    text = "the cat [MASK] on the mat"
    item = run(loaded, "fill-mask", [text], options={"top_k": 5}).items[0]
    cands = item["masks"][0]
    assert len(cands) == 5
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0
    enc = loaded.tokenizer(text, return_tensors="pt")
    pos = enc["input_ids"][0].tolist().index(loaded.tokenizer.mask_token_id)
    with torch.no_grad():
        probs = loaded.model(**enc).logits[0, pos].softmax(-1)
    top = probs.topk(5)
    assert [c["token"] for c in cands] == top.indices.tolist()
    assert scores == pytest.approx(top.values.tolist(), abs=1e-5)
    assert cands[0]["sequence"].split()[2] == cands[0]["token_str"] or cands[0]["token_str"].startswith("<")


def test_fill_mask_needs_a_mask(tiny):
    with pytest.raises(TaskError, match=r"\[MASK\]"):
        run(tiny("bert"), "fill-mask", ["the cat sat on the mat"])


# --- zero-shot ---------------------------------------------------------------------------------------------


def test_zero_shot_by_nli_sums_to_one(tiny):
    loaded = tiny("nli")
    assert tasks.is_nli(loaded)
    item = run(loaded, "zero-shot-classification", ["the cat sat"], labels=["dog", "park", "mat"]).items[0]
    assert item["method"] == "nli" and sorted(item["labels"]) == ["dog", "mat", "park"]
    assert sum(item["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_zero_shot_by_embeddings_gives_cosines(tiny):
    from explorer.tasks.models import embed

    loaded = tiny("bert")
    item = run(loaded, "zero-shot-classification", ["the cat sat"], labels=["dog", "park"]).items[0]
    assert item["method"] == "embedding"
    vecs = embed(loaded, ["the cat sat", "dog", "park"], [])
    expected = {"dog": float(vecs[0] @ vecs[1]), "park": float(vecs[0] @ vecs[2])}
    assert dict(zip(item["labels"], item["scores"])) == pytest.approx(expected, abs=1e-5)


def test_zero_shot_by_prompting_scores_each_label_by_its_log_probability(tiny):
    loaded = tiny("chat")
    item = run(loaded, "zero-shot-classification", ["the cat sat"], labels=["dog", "big park"]).items[0]
    assert item["method"] == "prompt" and "<s> assistant" in item["prompt"]
    assert sum(item["scores"]) == pytest.approx(1.0, abs=1e-5)
    assert all(lp < 0 for lp in item["logprobs"])
    by_label = dict(zip(item["labels"], item["logprobs"]))
    tok = loaded.tokenizer
    prompt_ids = tok(item["prompt"], add_special_tokens=False)["input_ids"]
    label_ids = tok(" big park", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = loaded.model(torch.tensor([prompt_ids + label_ids])).logits[0].log_softmax(-1)
    n = len(prompt_ids)
    assert by_label["big park"] == pytest.approx(
        float(logp[n - 1, label_ids[0]] + logp[n, label_ids[1]]), abs=1e-4
    )


def test_zero_shot_without_labels_gets_a_message(tiny):
    with pytest.raises(TaskError, match="No candidate labels"):
        run(tiny("bert"), "zero-shot-classification", ["the cat sat"], labels=[])


# --- generation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_greedy_generation_equals_generate(tiny, kind):
    loaded = tiny(kind)
    item = run(loaded, "text-generation", ["the cat sat"], options={"max_new_tokens": 6}).items[0]
    ids = loaded.tokenizer("the cat sat", return_tensors="pt")["input_ids"]
    ref = loaded.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    assert item["new_ids"] == ref.tolist()
    assert item["generated"] == loaded.tokenizer.decode(ref, skip_special_tokens=True)
    assert item["n_new_tokens"] <= 6 and item["seconds_per_token"] > 0


def test_sampling_with_a_seed_repeats(tiny):
    loaded = tiny("gpt2")
    opts = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "seed": 3}
    a = run(loaded, "text-generation", ["the cat"], options=opts).items[0]["new_ids"]
    b = run(loaded, "text-generation", ["the cat"], options=opts).items[0]["new_ids"]
    c = run(loaded, "text-generation", ["the cat"], options={**opts, "seed": 4}).items[0]["new_ids"]
    assert a == b and len(a) == 8
    assert a != c


def test_a_prompt_past_the_context_keeps_its_end(tiny):
    loaded = tiny("gpt2")  # 64 positions
    result = run(loaded, "text-generation", ["the cat sat " * 30], options={"max_new_tokens": 4})
    item = result.items[0]
    assert len(item["prompt_ids"]) == 60 and any("last 60 tokens" in n for n in result.notes)


def test_chat_uses_the_template_and_alternates_turns(tiny):
    loaded = tiny("chat")
    item = run(loaded, "chat", ["hi", "hello", "how big is the cat"], options={"max_new_tokens": 4}).items[0]
    assert item["prompt"].endswith("<s> assistant")
    assert (
        "<s> user how big is the cat </s>" in item["prompt"] and "<s> assistant hello </s>" in item["prompt"]
    )
    with pytest.raises(TaskError, match="ends with the user"):
        run(loaded, "chat", ["hi", "hello"])


def test_t5_summary_uses_its_prefix_and_settings(tiny):
    loaded = tiny("t5")
    item = run(loaded, "summarization", ["the cat sat on the mat"], options={"max_new_tokens": 5}).items[0]
    assert item["prompt"].startswith("summarize: ") and item["method"] == "sequence-to-sequence"
    from transformers import DynamicCache, EncoderDecoderCache

    ids = torch.tensor([item["prompt_ids"]])
    cache = EncoderDecoderCache(
        DynamicCache(), DynamicCache()
    )  # the tiny T5's decoder is deeper than its encoder
    ref = loaded.model.generate(
        ids, max_new_tokens=5, num_beams=2, min_new_tokens=3, do_sample=False, cache=cache
    )[0, 1:]
    assert item["new_ids"] == ref.tolist() and 3 <= item["n_new_tokens"] <= 5


def test_t5_translation_pairs(tiny):
    loaded = tiny("t5")
    item = run(loaded, "translation", ["the cat"], options={"pair": "en_to_fr", "max_new_tokens": 3}).items[0]
    assert item["prompt"] == "translate English to French: the cat" and item["direction"] == "en_to_fr"
    with pytest.raises(TaskError, match="en_to_de, en_to_fr"):
        run(loaded, "translation", ["the cat"], options={"pair": "en_to_xx"})


def test_bart_translates_as_trained_and_summarizes(tiny):
    loaded = tiny("bart")
    result = run(loaded, "translation", ["the cat sat", "a dog ran"], options={"max_new_tokens": 4})
    assert len(result.items) == 2 and any("one direction" in n for n in result.notes)
    item = run(loaded, "summarization", ["the cat sat on the mat"], options={"max_new_tokens": 4}).items[0]
    assert (
        item["n_new_tokens"] <= 4
        and item["output"] == loaded.tokenizer.decode(item["new_ids"], skip_special_tokens=True).strip()
    )


def test_summary_by_prompting_a_decoder_says_so(tiny):
    result = run(tiny("chat"), "summarization", ["the cat sat on the mat"], options={"max_new_tokens": 3})
    assert result.items[0]["method"] == "prompted decoder" and "Summarize" in result.items[0]["prompt"]
    assert "prompting" in result.how


# --- embeddings --------------------------------------------------------------------------------------------


def test_features_equal_the_feature_extraction_pipeline(tiny):
    from transformers import pipeline

    loaded = tiny("bert")
    item = run(loaded, "feature-extraction", ["the cat sat on the mat"]).items[0]
    ref = pipeline("feature-extraction", model=loaded.model.bert, tokenizer=loaded.tokenizer)(
        "the cat sat on the mat"
    )
    assert item["shape"] == [6, 32]
    assert torch.tensor(item["vectors"]) == pytest.approx(torch.tensor(ref[0]), abs=1e-5)


def test_encoder_decoder_features_come_from_the_encoder(tiny):
    loaded = tiny("t5")
    item = run(loaded, "feature-extraction", ["the cat"]).items[0]
    ids = torch.tensor([loaded.tokenizer("the cat")["input_ids"]])
    with torch.no_grad():
        ref = loaded.model.get_encoder()(input_ids=ids).last_hidden_state[0]
    assert torch.tensor(item["vectors"]) == pytest.approx(ref, abs=1e-5)


def test_similarity_matrix_is_symmetric_with_ones_on_the_diagonal(tiny):
    loaded = tiny("bert")
    sentences = ["the cat sat", "a dog ran to park", "the cat sat on the mat"]
    item = run(loaded, "sentence-similarity", sentences).items[0]
    m = torch.tensor(item["matrix"])
    assert m.shape == (3, 3) and torch.allclose(m, m.T, atol=1e-6)
    assert torch.allclose(m.diagonal(), torch.ones(3), atol=1e-5) and m.abs().max() <= 1 + 1e-5
    with torch.no_grad():  # mean pooling by hand
        vecs = [loaded.model.bert(**loaded.tokenizer(s, return_tensors="pt")).last_hidden_state[0].mean(0)
                for s in sentences[:2]]  # fmt: skip
    cos = torch.nn.functional.cosine_similarity(vecs[0], vecs[1], dim=0)
    assert float(m[0, 1]) == pytest.approx(float(cos), abs=1e-5)
    with pytest.raises(TaskError, match="at least two"):
        run(loaded, "sentence-similarity", ["the cat"])


def test_semantic_search_ranks_every_document(tiny):
    loaded = tiny("bert")
    docs = "a dog ran\nthe cat sat on the mat\n\nwhat day is it"
    item = run(loaded, "semantic-search", ["the cat"], context=docs).items[0]
    ranking = item["ranking"]
    assert sorted(r["document"] for r in ranking) == sorted(d for d in docs.splitlines() if d)
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in ranking] == [1, 2, 3]
    with pytest.raises(TaskError, match="needs documents"):
        run(loaded, "semantic-search", ["the cat"], context="")


# --- bad input ---------------------------------------------------------------------------------------------


def test_empty_and_huge_inputs_get_messages(tiny):
    loaded = tiny("bert")
    with pytest.raises(TaskError, match="empty"):
        run(loaded, "fill-mask", ["   "])
    with pytest.raises(TaskError, match="1,048,576 characters"):
        run(loaded, "fill-mask", ["x" * 2**20])
    with pytest.raises(TaskError, match="empty"):
        tasks.split_lines("\n \n")
    with pytest.raises(TaskError, match="at most 200"):
        tasks.split_lines("\n".join(["a"] * 201))
    assert tasks.parse_labels(" a, b,,a , c ") == ["a", "b", "c"]


def test_batch_runs_every_line(tiny):
    loaded = tiny("classifier")
    seen = []
    result = tasks.run(loaded, "text-classification", TaskInput(["the cat", "a dog", "the mat"]),
                       progress=lambda f, s: seen.append(f))  # fmt: skip
    assert [it["text"] for it in result.items] == ["the cat", "a dog", "the mat"]
    assert seen and all(0 <= f <= 1 for f in seen)


# --- pictures ----------------------------------------------------------------------------------------------

HOSTILE = "</script><b>x</b><img src=x onerror=alert(1)>"


def test_figures_escape_text():
    fig = task_figures.label_bars([HOSTILE, "ok"], [0.7, 0.3], HOSTILE, "probability")
    spec = fig.to_json()
    assert "<img" not in spec and "<b>x" not in spec and "&lt;img" in spec
    n = len(HOSTILE)
    page = task_figures.entity_html(
        HOSTILE + " Paris", [{"label": "<LOC>", "score": 0.9, "start": n + 1, "end": n + 6}]
    )
    assert "<img" not in page and "<b>" not in page and "&lt;LOC&gt;" in page and ">Paris<" in page
    heat = task_figures.similarity_heatmap([HOSTILE, "b"], [[1, 0.2], [0.2, 1]], "t").to_json()
    assert "<img" not in heat


def test_span_html_marks_exactly_the_answer():
    page = task_figures.span_html("a < b and c", 4, 5, "answer", 0.5)
    assert "a &lt; " in page and ">b<sup" in page and " and c" in page


# --- command line ------------------------------------------------------------------------------------------


def test_cli_prints_json_and_refuses_with_a_reason(tiny_dir, capsys):
    from explorer.__main__ import main

    folder = str(tiny_dir("bert"))
    assert main(["task", folder, "fill-mask", "--text", "the cat [MASK]", "--top-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "fill-mask" and len(out["items"][0]["masks"][0]) == 3
    assert main(["task", folder, "sentiment-analysis", "--text", "the cat"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no trained SequenceClassification head" in err
    assert main(["task", folder, "zero-shot-classification", "--text", "the cat", "--json"]) == 1
    assert "No candidate labels" in capsys.readouterr().err


# --- the embedded models -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_similarity_and_its_missing_mlm_head():
    loaded = load_model(LoadRequest("embedded", "all-minilm-l6-v2"))
    assert not tasks.support(loaded, "fill-mask").ok
    with pytest.raises(TaskError, match="cls.predictions"):
        tasks.head_model(loaded, "AutoModelForMaskedLM")
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "A monkey is playing drums."]
    m = run(loaded, "sentence-similarity", sentences).items[0]["matrix"]
    assert m[0][1] > m[0][2] and m[0][1] > m[1][2]  # the two meals are the nearest pair
    tasks.forget_heads()


@pytest.mark.slow
def test_smollm2_chat_reply_is_its_greedy_generation():
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    item = run(loaded, "chat", ["What is the capital of France?"], options={"max_new_tokens": 12}).items[0]
    ids = torch.tensor([item["prompt_ids"]])
    ref = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert item["new_ids"] == ref[0, ids.shape[1] :].tolist()
    assert "Paris" in item["reply"]


def test_old_layernorm_names_count_as_present(tmp_path):
    """bert-base-uncased stores LayerNorm.gamma/beta; transformers renames them on load, so does the check."""
    from safetensors.torch import load_file, save_file

    folder = _save(tmp_path, "BertForMaskedLM")
    weights = load_file(folder / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in weights.items()}  # fmt: skip
    assert "cls.predictions.transform.LayerNorm.gamma" in renamed
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    loaded = load_model(LoadRequest("folder", str(folder), device="cpu"))
    assert tasks.untrained_head(loaded.model, tasks.checkpoint_names(loaded)) == []
    del renamed["cls.predictions.transform.dense.weight"]
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    assert tasks.untrained_head(loaded.model, tasks.checkpoint_names(loaded)) == [
        "cls.predictions.transform.dense.weight"
    ]


@pytest.mark.slow
def test_gemma_base_generates_but_does_not_chat():
    loaded = load_model(LoadRequest("embedded", "gemma-3-270m"))
    refusal = tasks.support(loaded, "chat")
    assert not refusal.ok and "no chat template" in refusal.how
    with pytest.raises(TaskError, match="no chat template"):
        run(loaded, "chat", ["hello"])
    item = run(loaded, "text-generation", ["The capital of France is"], options={"max_new_tokens": 4}).items[
        0
    ]
    ids = torch.tensor([item["prompt_ids"]])
    ref = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert item["new_ids"] == ref[0, ids.shape[1] :].tolist()


def test_text_to_text_writes_what_the_model_generates(tiny):
    loaded = tiny("t5")
    item = run(loaded, "text-to-text", ["the cat sat"], options={"max_new_tokens": 4}).items[0]
    ids = loaded.tokenizer("the cat sat", return_tensors="pt")["input_ids"]
    from transformers import DynamicCache, EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())  # T5's decoder is shallower than its encoder
    greedy = loaded.model.generate(ids, max_new_tokens=4, do_sample=False, cache=cache)[0]
    assert item["prompt"] == "the cat sat"  # no task prefix
    assert item["output"] == loaded.tokenizer.decode(greedy, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_the_date_normalizer_does_its_own_job_and_not_summaries():
    from explorer.models.loading import LoadRequest, load_model

    loaded = load_model(LoadRequest("embedded", "date-normalizer"))
    assert not tasks.support(loaded, "summarization").ok and not tasks.support(loaded, "translation").ok
    assert "rewriting a date" in tasks.support(loaded, "translation").how
    item = run(loaded, "text-to-text", ["Tuesday, 23rd November 2026"]).items[0]
    assert item["output"] == "2026-11-23"
