"""The lessons' answers, recomputed here another way on tiny models of each family: from a plain forward
pass of the model (not the app's hooked run), from the weights, or from what each architecture is."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from explorer.lessons import course, glossary, inside, measure, reading
from explorer.lessons.questions import CHOICE, MANY, NUMBER, Question, parse_number
from explorer.runs.capture import capture

TEXT = "the cat sat on the mat because it was tired"
KINDS = ["llama", "gpt2", "bert", "t5"]


@pytest.fixture(scope="module")
def built(tiny_loaded):
    """kind -> (loaded, capture, {lesson id: Live, or the reason it does not apply})"""
    made = {}

    def get(kind: str):
        if kind not in made:
            loaded = tiny_loaded(kind)
            cap = capture(loaded, TEXT)
            lives = {}
            for lesson in course.LESSONS:
                lives[lesson.id] = course.absent(lesson, loaded) or lesson.build(loaded, TEXT, cap)
            made[kind] = loaded, cap, lives
        return made[kind]

    return get


def _forward(loaded, cap, **extra):
    """A plain forward pass of the captured sequence (encoder-decoders: source and decoder input)."""
    model = loaded.model
    if cap.source is not None:
        ids = torch.tensor([cap.source.ids])
        kw = dict(decoder_input_ids=torch.tensor([cap.sequence.ids]))
    else:
        ids, kw = torch.tensor([cap.sequence.ids]), {}
    with torch.no_grad():
        return model(input_ids=ids, output_attentions=True, use_cache=False, **kw, **extra)


def _ints(prompt: str, *names: str) -> list[int]:
    return [int(re.search(rf"{name} (\d+)", prompt).group(1)) for name in names]


# -- the question itself ----------------------------------------------------------------------------------


def test_numbers_are_read_as_people_type_them():
    assert parse_number("0.25") == 0.25
    assert parse_number("0,25") == 0.25
    assert parse_number("126,720") == 126720
    assert parse_number("1 234 567") == 1234567
    assert parse_number(" 3e-2 ") == 0.03
    assert parse_number("eight") is None and parse_number("") is None and parse_number("1.2.3") is None


def test_a_number_is_right_within_the_tolerance_only():
    q = Question("?", NUMBER, 0.896845, tolerance=1e-5)
    assert q.check("0.896845") and q.check("0.89685")
    assert not q.check("0.8968") and not q.check("0.9")


def test_choices_must_match_and_many_must_match_as_a_set():
    one = Question("?", CHOICE, "b", options=("a", "b"))
    assert one.check("b") and not one.check("a") and not one.check(None)
    many = Question("?", MANY, ("a", "c"), options=("a", "b", "c"))
    assert many.check(["c", "a"]) and not many.check(["a"]) and not many.check(["a", "b", "c"])
    with pytest.raises(ValueError):
        Question("?", CHOICE, "z", options=("a", "b"))


def test_every_glossary_mark_in_the_lessons_is_explained():
    for lesson in course.LESSONS:
        for sentence in lesson.idea:
            for term in glossary.marked_terms(sentence):
                assert glossary.explain(term)
    html = glossary.gloss("a [[head]] and [[keys|key]] <b>")
    assert 'class="gloss"' in html and "head: One of" in html and "keys</span>" in html


# -- each lesson's answer, recomputed ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_token_count(built, kind):
    loaded, cap, lives = built(kind)
    want = len(loaded.tokenizer(TEXT)["input_ids"])
    if kind == "t5":  # T5's tokenizer adds </s>; the tiny one does not, the model reads what encode gives
        want = len(cap.source.ids)
    assert lives["tokens"].question.answer == want


@pytest.mark.parametrize("kind", KINDS)
def test_one_weight_by_hand(built, kind):
    """The answer is the model's own weight (a plain forward pass), and the softmax of the scores the
    table shows gives it to 1e-5: the student's exercise can be done from the page."""
    loaded, cap, lives = built(kind)
    live = lives["one-head"]
    layer, head, query = _ints(live.question.prompt, "Layer", "head", "query")
    key = int(re.search(r"the key \*\*(\d+)\\?:", live.question.prompt).group(1))
    out = _forward(loaded, cap)
    maps = out.encoder_attentions if cap.source is not None else out.attentions
    assert abs(float(maps[layer][0, head, query, key]) - live.question.answer) < 1e-6
    z = np.array([float(v) for v in live.table["z = scaled score"]])
    keys = [int(k.split(":")[0]) for k in live.table["key"]]
    w = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert abs(w[keys.index(key)] - live.question.answer) < 1e-5
    assert live.question.check(f"{w[keys.index(key)]:.6f}")


@pytest.mark.parametrize("kind", KINDS)
def test_most_attended_token(built, kind):
    loaded, cap, lives = built(kind)
    q = lives["heads"].question
    layer, head, pos = _ints(q.prompt, "layer", "head", "position")
    out = _forward(loaded, cap)
    maps = out.encoder_attentions if cap.source is not None else out.attentions
    row = maps[layer][0, head, pos].numpy()
    assert int(q.answer.split(":")[0]) == int(np.argmax(row))


@pytest.mark.parametrize(("kind", "scheme"), [("llama", "rope"), ("gpt2", "learned"), ("bert", "learned"),
                                              ("t5", "relative")])  # fmt: skip
def test_position_scheme(built, kind, scheme):
    assert built(kind)[2]["positions"].question.answer == reading.PLACES[scheme]


@pytest.mark.parametrize("kind", KINDS)
def test_zeros_in_the_map(built, kind):
    loaded, cap, lives = built(kind)
    out = _forward(loaded, cap)
    grid = (out.decoder_attentions if cap.source is not None else out.attentions)[0][0, 0]
    n = grid.shape[0]
    want = n * (n - 1) // 2 if kind != "bert" else 0  # causal: above the diagonal; bidirectional: none
    assert lives["masks"].question.answer == want == int((grid == 0).sum())


def test_cross_attention_only_where_there_is_one(built):
    for kind in ("llama", "gpt2", "bert"):
        reason = built(kind)[2]["cross-attention"]
        assert isinstance(reason, str) and "no cross-attention" in reason
    loaded, cap, lives = built("t5")
    q = lives["cross-attention"].question
    layer, head = _ints(q.prompt, "Layer", "head")
    rows = cap.attention_set("cross").queries.tokens
    row = next(i for i, r in enumerate(rows) if f"**{r}**" in q.prompt.replace("\\", ""))
    cross = _forward(loaded, cap).cross_attentions[layer][0, head, row].numpy()
    assert int(q.answer.split(":")[0]) == int(np.argmax(cross))


@pytest.mark.parametrize("kind", KINDS)
def test_the_neuron_that_writes_most(built, kind):
    """|a| ‖w‖ from the down projection's own input (a plain forward hook) and its weight columns."""
    loaded, cap, lives = built(kind)
    q = lives["ffn"].question
    layer = int(re.search(r"of layer (\d+)", q.prompt).group(1))
    model = loaded.model
    down = {
        "llama": lambda: model.model.layers[layer].mlp.down_proj,
        "gpt2": lambda: model.transformer.h[layer].mlp.c_proj,
        "bert": lambda: model.bert.encoder.layer[layer].output.dense,
        "t5": lambda: model.decoder.block[layer].layer[2].DenseReluDense.wo,
    }[kind]()
    seen = {}
    handle = down.register_forward_pre_hook(lambda m, args: seen.update(a=args[0][0, -1].detach()))
    try:
        with torch.no_grad():
            ids = torch.tensor([loaded.tokenizer(TEXT)["input_ids"]])
            kw = (
                {"decoder_input_ids": torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], 1)}
                if kind == "t5"
                else {}
            )
            model(input_ids=ids, **kw)
    finally:
        handle.remove()
    w = down.weight.detach()  # (d_model, d_ff) for nn.Linear; GPT-2's Conv1D stores (d_ff, d_model)
    columns = w if kind == "gpt2" else w.T  # (d_ff, d_model)
    written = seen["a"].abs() * columns.norm(dim=-1)
    offered = [int(o.split()[1]) for o in q.options]
    assert int(q.answer.split()[1]) == max(offered, key=lambda i: float(written[i]))


@pytest.mark.parametrize(("kind", "answer"), [
    ("llama", "RMSNorm before each sub-layer (pre-norm)"),
    ("gpt2", "LayerNorm before each sub-layer (pre-norm)"),
    ("bert", "LayerNorm after each residual add (post-norm)"),
    ("t5", "RMSNorm before each sub-layer (pre-norm)"),
])  # fmt: skip
def test_norm_and_placement(built, kind, answer):
    assert built(kind)[2]["residual"].question.answer == answer


@pytest.mark.parametrize("kind", ["llama", "gpt2", "t5"])
def test_numbers_in_the_kv_cache(built, kind):
    """The cache of a plain forward pass, counted tensor by tensor, and the formula 2 L H_kv d_head n."""
    loaded, cap, lives = built(kind)
    q = lives["kv-cache"].question
    model = loaded.model
    ids = torch.tensor([cap.source.ids if kind == "t5" else loaded.tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        if kind == "t5":
            start = torch.tensor([[model.config.decoder_start_token_id]])
            out = model(input_ids=ids, decoder_input_ids=start, use_cache=True)
            cache, layers, heads, d_head = out.past_key_values.cross_attention_cache, 3, 4, 8
        else:
            out = model(input_ids=ids, use_cache=True)
            cache, layers, d_head = out.past_key_values, 2, 8
            heads = 2 if kind == "llama" else 4
    counted = sum(t.numel() for layer in cache.layers for t in (layer.keys, layer.values))
    assert q.answer == counted == 2 * layers * heads * d_head * ids.shape[1]


def test_no_generation_lessons_on_an_encoder(built):
    lives = built("bert")[2]
    assert isinstance(lives["kv-cache"], str) and isinstance(lives["sampling"], str)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "t5"])
def test_tokens_left_by_top_k_then_top_p(built, kind):
    loaded, cap, lives = built(kind)
    logits = _forward(loaded, cap).logits[0, -1].double()
    p = torch.sort(logits.softmax(-1), descending=True).values[: inside.TOP_K]
    p = (p / p.sum()).numpy()
    want = int(np.searchsorted(np.cumsum(p), inside.TOP_P) + 1)  # the smallest set reaching top-p
    assert lives["sampling"].question.answer == want


@pytest.mark.parametrize("kind", ["llama", "bert", "t5"])
def test_query_heads_sharing_a_key_value_head(built, kind):
    """Found by the weights: zeroing one key/value head's rows of W_K changes exactly the maps of the query
    heads that read it."""
    loaded, cap, lives = built(kind)
    q = lives["modern"].question
    asked = int(re.search(r"query head (\d+)", q.prompt).group(1))
    model = loaded.model
    k_proj = {"llama": lambda: model.model.layers[0].self_attn.k_proj,
              "bert": lambda: model.bert.encoder.layer[0].attention.self.key,
              "t5": lambda: model.decoder.block[0].layer[0].SelfAttention.k}[kind]()  # fmt: skip
    n_heads, d_head = 4, 8
    n_kv = k_proj.weight.shape[0] // d_head
    group = n_heads // n_kv
    before = _forward(loaded, cap)
    saved = k_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            k_proj.weight[(asked // group) * d_head : (asked // group + 1) * d_head] *= 3.0
        after = _forward(loaded, cap)
    finally:
        with torch.no_grad():
            k_proj.weight.copy_(saved)
    maps = "decoder_attentions" if kind == "t5" else "attentions"
    a, b = getattr(before, maps)[0][0], getattr(after, maps)[0][0]
    changed = {f"head {h}" for h in range(n_heads) if not torch.allclose(a[h], b[h], atol=1e-7)}
    assert set(q.answer) == changed and f"head {asked}" in changed


@pytest.mark.parametrize(
    ("kind", "divide"), [("llama", 8**0.5), ("gpt2", 8**0.5), ("bert", 8**0.5), ("t5", 1.0)]
)
def test_what_q_k_is_divided_by(built, kind, divide):
    """The architectures' own rule: √d_head (d_head 8 here), and 1 for T5, which has no scaling."""
    q = built(kind)[2]["questions"].question
    assert abs(q.answer - divide) < 1e-9 and q.check(f"{divide:.3f}")


def test_generation_with_and_without_the_cache_agree(tiny_loaded):
    cost = measure.cache_cost(tiny_loaded("llama"), TEXT, steps=5)
    assert cost.agree and len(cost.tokens) == len(cost.cached) == len(cost.full) == 5


def test_attention_weights_grow_with_the_square_of_the_length(tiny_loaded):
    grow = measure.growth(tiny_loaded("gpt2"), TEXT, lengths=(16, 32))
    assert grow.weights == (2 * 4 * 16**2, 2 * 4 * 32**2)
    assert all(0 < a < t for a, t in zip(grow.attention, grow.total))
