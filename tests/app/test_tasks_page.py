"""The Tasks page in Streamlit's AppTest: tasks offered by the loaded model, pictures of the answers, clear
messages for bad input, batches as tables."""

from __future__ import annotations

import html
import re

import pytest

from explorer import session
from tests.app.helpers import app, charts, load_folder, run
from tests.unit.test_tasks import CHAT_TEMPLATE, HOSTILE, _save

PAGE = "views/tasks.py"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tests.conftest import tiny_tokenizer

    ner = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    labels = {0: "negative", 1: "positive"}
    chat_tok = tiny_tokenizer()
    chat_tok.chat_template = CHAT_TEMPLATE
    return {
        "classifier": _save(tmp_path_factory.mktemp("cls"), "BertForSequenceClassification", id2label=labels,
                            label2id={v: k for k, v in labels.items()}),
        "ner": _save(tmp_path_factory.mktemp("ner"), "BertForTokenClassification", id2label=ner,
                     label2id={v: k for k, v in ner.items()}),
        "qa": _save(tmp_path_factory.mktemp("qa"), "BertForQuestionAnswering"),
        "chat": _save(tmp_path_factory.mktemp("chat"), "LlamaForCausalLM", "llama", tokenizer=chat_tok),
    }  # fmt: skip


def tasks_page(folder) -> object:
    at = app()
    load_folder(at, folder)
    at.switch_page(PAGE)
    return run(at)


def choose(at, task: str):
    at.selectbox(key="tasks_task").set_value(task)
    return run(at)


def press_run(at):
    at.button(key="tasks_run").click()
    return run(at)


def errors(at) -> str:
    return " ".join(e.value for e in at.main.error)


def test_the_default_model_offers_its_tasks_and_refuses_others():
    at = app()
    at.switch_page(PAGE)
    run(at)
    assert at.title[0].value == "Tasks"
    box = at.selectbox(key="tasks_task")
    shown = {o for o in box.options}
    assert "✓ Chat" in shown and "✓ Text generation" in shown and "✗ Fill the mask" in shown
    assert box.value == "zero-shot-classification"  # the first task it can do (not text classification)
    choose(at, "fill-mask")
    text = errors(at)
    assert "cannot do fill the mask" in text and "bert-base-uncased" in text
    assert not at.get("plotly_chart")


def test_fill_mask_draws_the_candidates(tiny_dir):
    at = tasks_page(tiny_dir("bert"))
    choose(at, "fill-mask")
    at.text_area(key="tasks_text_fill-mask").set_value("the cat [MASK] on the mat")
    at.slider(key="tasks_fill_k").set_value(4)
    press_run(at)
    (bars,) = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("Mask 1")]
    x = bars["data"][0]["x"]
    assert len(bars["data"][0]["y"]) == 4 and list(x) == sorted(x, reverse=True) and sum(x) <= 1
    assert any("Best:" in c.value for c in at.caption)


def test_bad_inputs_get_messages(tiny_dir, folders):
    at = tasks_page(tiny_dir("bert"))
    choose(at, "fill-mask")
    at.text_area(key="tasks_text_fill-mask").set_value("   ")
    press_run(at)
    assert "is empty" in errors(at)
    at.text_area(key="tasks_text_fill-mask").set_value("a" * 2**20)
    press_run(at)
    assert "1,048,576 characters" in errors(at)
    at.text_area(key="tasks_text_fill-mask").set_value("the cat sat")
    press_run(at)
    assert "should fill in a word" in errors(at)
    choose(at, "zero-shot-classification")
    at.text_input(key="tasks_labels").set_value(" , ")
    press_run(at)
    assert "No candidate labels" in errors(at)
    load_folder(at, folders["qa"])
    choose(at, "question-answering")
    at.text_area(key="tasks_context_question-answering").set_value("")
    press_run(at)
    assert "needs a context" in errors(at)


def test_an_over_long_text_is_cut_with_a_warning(folders):
    at = tasks_page(folders["classifier"])
    choose(at, "text-classification")
    at.text_area(key="tasks_text_text-classification").set_value("the cat sat " * 50)
    press_run(at)
    assert any("at most 64" in w.value for w in at.warning)
    bars = charts(at)[0]["data"][0]
    assert sorted(bars["y"]) == ["negative", "positive"]


def test_batch_gives_a_table_and_a_csv(folders):
    at = tasks_page(folders["classifier"])
    choose(at, "text-classification")
    at.toggle(key="tasks_batch").set_value(True)
    run(at)
    at.text_area(key="tasks_text_text-classification").set_value("the cat sat\n\na dog ran\nthe mat")
    press_run(at)
    frame = at.dataframe[0].value
    assert list(frame["input"]) == ["the cat sat", "a dog ran", "the mat"]
    assert ((frame["score: negative"] + frame["score: positive"]) - 1).abs().max() < 1e-5
    assert at.get("download_button")


def test_entities_are_highlighted_as_escaped_text(folders):
    at = tasks_page(folders["ner"])
    choose(at, "token-classification")
    text = f"the cat {HOSTILE} sat in park"
    at.text_area(key="tasks_text_token-classification").set_value(text)
    press_run(at)
    (page,) = [h.proto.body for h in at.get("html")]
    assert "<img" not in page and "<b>" not in page and "</script>" not in page
    shown = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<sup[^>]*>.*?</sup>", "", page)))
    assert shown == text  # the text comes back whole, as text, around the marks
    assert "<mark" in page


def test_question_answering_marks_the_answer_in_the_context(folders):
    at = tasks_page(folders["qa"])
    choose(at, "question-answering")
    context = "the cat sat on the mat because it was tired"
    at.text_area(key="tasks_text_question-answering").set_value("where is the cat")
    at.text_area(key="tasks_context_question-answering").set_value(context)
    press_run(at)
    (page,) = [h.proto.body for h in at.get("html")]
    assert "<mark" in page and page.count("<mark") == 1
    (scores,) = [c for c in charts(at) if "Start and end" in c["layout"]["title"]["text"]]
    assert [t["name"] for t in scores["data"]] == ["start", "end"]
    assert len(scores["data"][0]["y"]) == len(context.split())


def test_similarity_heatmap(tiny_dir):
    at = tasks_page(tiny_dir("bert"))
    choose(at, "sentence-similarity")
    at.text_area(key="tasks_text_sentence-similarity").set_value("the cat sat\na dog ran\nthe mat")
    press_run(at)
    (heat,) = [c for c in charts(at) if c["data"][0]["type"] == "heatmap"]
    z = heat["data"][0]["z"]
    assert len(z) == 3 and all(abs(z[i][i] - 1) < 1e-5 for i in range(3))
    assert any("not trained as a sentence embedder" in c.value for c in list(at.caption) + list(at.info))


def test_chat_keeps_the_turns_and_hands_the_text_to_attention(folders):
    at = tasks_page(folders["chat"])
    choose(at, "chat")
    at.text_area(key="tasks_text_chat").set_value("how big is the cat")
    at.number_input(key="tasks_new_chat").set_value(3)
    press_run(at)
    messages = at.get("chat_message")
    assert len(messages) == 2
    assert at.text_area(key="tasks_text_chat").value == ""  # the message moved into the chat
    assert any("new tokens" in c.value and "ms per token" in c.value for c in at.caption)
    at.button(key="attn-chat").click()
    run(at)
    sent = at.session_state[session.TEXT]
    assert sent.startswith("<s> user how big is the cat </s><s> assistant")
    at.switch_page(PAGE)
    run(at)
    assert len(at.get("chat_message")) == 2  # the chat is still there after the visit
    at.button(key="tasks_clear").click()
    run(at)
    assert len(at.get("chat_message")) == 0
    assert not any("ms per token" in c.value for c in at.caption)  # nor the last reply's timing


def test_the_text_survives_a_visit_to_another_page(tiny_dir):
    at = tasks_page(tiny_dir("bert"))
    choose(at, "fill-mask")
    at.text_area(key="tasks_text_fill-mask").set_value("a dog [MASK] to the park")
    run(at)
    at.switch_page("views/model.py")
    run(at)
    at.switch_page(PAGE)
    run(at)
    assert at.selectbox(key="tasks_task").value == "fill-mask"
    assert at.text_area(key="tasks_text_fill-mask").value == "a dog [MASK] to the park"


def test_the_date_normalizer_opens_on_its_own_job():
    at = app(timeout=120)
    at.session_state[session.EMBEDDED] = "date-normalizer"
    run(at)
    at.sidebar.button[0].click()
    run(at)
    at.switch_page(PAGE)
    run(at)
    assert at.selectbox(key="tasks_task").value == "text-to-text"
    labels = at.selectbox(key="tasks_task").options  # as shown: each with its ✓ or ✗
    assert "✗ Summarization" in labels and "✗ Translation" in labels and "✓ Text to text" in labels
    assert "Tuesday, 23rd November 2026" in [t.value for t in at.text_area]
    at.button(key="tasks_run").click()
    run(at)
    assert any(c.value == "2026-11-23" for c in at.code)  # what the model writes for its own example


def test_a_link_to_an_answer_opens_on_it(tiny_dir):
    from tests.app.test_links import opened

    at = tasks_page(tiny_dir("bert"))
    choose(at, "fill-mask")
    at.text_area(key="tasks_text_fill-mask").set_value("the cat [MASK] on the mat")
    press_run(at)
    link = dict(at.query_params)
    assert link["task"] == "fill-mask" and link["run"] == "1"
    assert link["task_text"] == "the cat [MASK] on the mat"
    other = opened(link, PAGE)  # someone else's browser: the same task, text and answer
    assert other.selectbox(key="tasks_task").value == "fill-mask"
    assert other.text_area(key="tasks_text_fill-mask").value == "the cat [MASK] on the mat"
    mine = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("Mask 1")][0]
    theirs = [c for c in charts(other) if c["layout"]["title"]["text"].startswith("Mask 1")][0]
    assert theirs["data"][0]["y"] == mine["data"][0]["y"] and theirs["data"][0]["x"] == mine["data"][0]["x"]
