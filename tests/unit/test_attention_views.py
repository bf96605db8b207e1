"""The numbers and pictures computed from attention maps: statistics, rollout, focus, thumbnails,
bertviz pages, readable tokens and the logit lens."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch

from explorer.analyses import attention as A
from explorer.analyses.hidden import consecutive_cosine, logit_lens, norms
from explorer.analyses.tokens import BYTE_LEVEL, SENTENCEPIECE, WORDPIECE, readable
from explorer.figures.attention import grid_image, heads_grid, logit_lens_figure, token_heatmap
from explorer.models.loading import LoadRequest, load_model
from explorer.runs.capture import AttentionSet, Sequence, capture
from explorer.web.bertviz_view import bertviz_html, numbers_json, script_json

HOSTILE = ["</script><b>x</b>", "<img src=x onerror=alert(1)>", "plain", "&amp;"]


def causal_uniform(n: int) -> np.ndarray:
    a = np.tril(np.ones((n, n)))
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def test_statistics_of_known_maps():
    n = 6
    eye = np.eye(n, dtype=np.float32)[None, None]
    prev = np.eye(n, k=-1, dtype=np.float32)
    prev[0, 0] = 1.0
    prev = prev[None, None]
    uniform = np.full((1, 1, n, n), 1 / n, dtype=np.float32)
    assert A.head_statistics(eye, "self")[0, 0] == pytest.approx(1.0)
    assert A.head_statistics(eye, "distance")[0, 0] == pytest.approx(0.0)
    assert A.head_statistics(eye, "entropy")[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert A.head_statistics(prev, "previous")[0, 0] == pytest.approx(1.0)
    assert A.head_statistics(prev, "distance")[0, 0] == pytest.approx((n - 1) / n)
    assert A.head_statistics(uniform, "entropy")[0, 0] == pytest.approx(np.log2(n))
    assert A.head_statistics(uniform, "first")[0, 0] == pytest.approx(1 / n)
    with pytest.raises(ValueError):
        A.head_statistics(np.full((1, 1, 2, 3), 1 / 3), "previous")


def test_the_uniform_entropy_reference_counts_the_keys_each_query_may_read():
    assert A.uniform_entropy(4, 4, causal=False) == pytest.approx(2.0)
    assert A.uniform_entropy(4, 4, causal=True) == pytest.approx(np.mean(np.log2([1, 2, 3, 4])))
    assert A.uniform_entropy(4, 4, causal=True, window=2) == pytest.approx(np.mean(np.log2([1, 2, 2, 2])))
    # the reference is the entropy statistic of that very map: uniform rows under the mask
    n = 7
    causal = np.tril(np.ones((n, n), dtype=np.float64))
    maps = (causal / causal.sum(-1, keepdims=True))[None, None]
    assert A.head_statistics(maps, "entropy")[0, 0] == pytest.approx(A.uniform_entropy(n, n, causal=True))


def test_rollout_of_identity_attention_is_the_identity():
    eye = np.broadcast_to(np.eye(5, dtype=np.float32), (3, 2, 5, 5))
    np.testing.assert_allclose(A.rollout(eye), np.broadcast_to(np.eye(5), (3, 5, 5)), atol=1e-7)


def test_rollout_multiplies_residual_mixed_layers():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, 4, 4)).astype(np.float32)
    maps /= maps.sum(-1, keepdims=True)
    mixed = [0.5 * np.eye(4) + 0.5 * maps[i].mean(0) for i in range(2)]
    np.testing.assert_allclose(A.rollout(maps)[1], mixed[1] @ mixed[0], atol=1e-6)
    np.testing.assert_allclose(A.rollout(maps).sum(-1), 1.0, atol=1e-6)


def test_focus_and_top_attended():
    maps = np.stack([np.stack([causal_uniform(4), np.eye(4, dtype=np.float32)])])  # [1, 2, 4, 4]
    assert A.focus(maps, 3, 0).tolist() == [[0.25, 0.0]]
    top = A.top_attended(maps, 3, k=2)
    assert top[0][0].key == 3 and top[0][0].weight == pytest.approx(0.625)


def test_pool_max_keeps_the_largest_weight_of_each_block():
    a = np.zeros((1, 1, 10, 10), dtype=np.float32)
    a[0, 0, 9, 0] = 0.7
    pooled, block = A.pool_max(a, 4)
    assert block == 3 and pooled.shape == (1, 1, 4, 4)
    assert pooled[0, 0, 3, 0] == pytest.approx(0.7)
    assert pooled.sum() == pytest.approx(0.7)


def test_grid_is_one_small_image_whatever_the_length():
    rng = np.random.default_rng(1)
    maps = rng.random((18, 4, 512, 512)).astype(np.float32)
    fig = heads_grid(maps, "t")
    spec = fig.to_plotly_json()
    size = len(json.dumps(spec, default=str))
    assert size < 2_000_000
    image = spec["data"][0]["source"]
    assert image.startswith("data:image/png;base64,")
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1])))
    cell = png.size[0] // 4
    assert png.size[1] == 18 * cell  # 18 rows of thumbnails
    # one clickable marker per head, carrying (layer, head)
    assert spec["data"][1]["customdata"][-1] == [17, 3]


def test_grid_image_colours_each_map_and_enlarges_short_ones():
    maps = np.zeros((2, 2, 3, 3), dtype=np.float32)
    maps[1, 0, 2, 1] = 0.5
    image, block = grid_image(maps, cell=30, scale="map")
    assert block == 1 and image.shape == (2 * 33, 2 * 33, 3)
    cell = image[33:63, 0:30]  # layer 1, head 0: 10 x 10 pixels per token pair
    top_colour, bright = cell[0, 0], cell[25, 15]
    assert not np.array_equal(top_colour, bright)


def test_token_text_reaches_plotly_escaped_once_titles_included():
    tokens = ['"hello"', "</s>", "a&b"]
    fig = token_heatmap(causal_uniform(3), tokens, tokens, "What “</s>” attends to")
    assert fig.layout.title.text == "What “&lt;/s&gt;” attends to"  # not read as a closing tag
    assert '"hello"' in fig.layout.xaxis.ticktext[0]  # Plotly shows &quot; as it is: quotes stay
    assert fig.layout.xaxis.ticktext[1:] == ("&lt;/s&gt;", "a&amp;b")
    lens = logit_lens_figure(
        np.full((2, 1, 2), 0.5, dtype=np.float32), ((('"x"', "<y>"),), (("z", "w"),)), tokens, (0,)
    )
    assert lens.data[0].text[0][0] == '"x"'


def test_heatmap_labels_are_escaped_and_unique():
    fig = token_heatmap(causal_uniform(4), HOSTILE, HOSTILE, "t")
    text = json.dumps(fig.to_plotly_json(), default=str)
    assert "<img" not in text and "<b>x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert len(set(fig.data[0].x)) == 4


def _set(tokens, maps) -> AttentionSet:
    seq = Sequence(tuple(range(len(tokens))), tuple(tokens), (False,) * len(tokens))
    return AttentionSet("self", "Self-attention", maps, seq, seq, True, (None,) * maps.shape[0])


def test_bertviz_page_is_escaped_offline_and_written_once():
    maps = np.stack([np.stack([causal_uniform(4)] * 2)] * 3)  # [3, 2, 4, 4]
    html = bertviz_html([_set(HOSTILE, maps)], "head", layers=[0, 2])
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 4  # d3, jQuery, the require stand-in, bertviz's view: nothing ends early
    assert "<script src" not in html
    assert "\\u003c/script\\u003e\\u003cb\\u003ex" in html
    assert "<img" not in html.replace("\\u003cimg", "")
    # once as the queries, once as the keys (bertviz's own template writes the whole data twice: 4)
    assert html.count("onerror=alert(1)") == 2
    assert '"include_layers":[0,2]' in html
    assert "[[[1,0,0,0],[.5,.5,0,0],[.333,.333,.333,0],[.25,.25,.25,.25]]" in html


def test_bertviz_refuses_texts_too_long_to_read():
    from explorer.errors import InputError

    maps = np.zeros((1, 1, 300, 300), dtype=np.float32)
    with pytest.raises(InputError, match="at most 256"):
        bertviz_html([_set(["a"] * 300, maps)], "model")


def test_json_for_scripts_and_numbers():
    assert "<" not in script_json({"t": "</script>"}) and "\u2028" not in script_json("\u2028")
    assert json.loads(script_json({"t": "</script>&"})) == {"t": "</script>&"}
    assert json.loads(numbers_json(np.array([0.0, 0.25, 1.0, -0.5])).replace(".", "0.")) == [0, 0.25, 1, -0.5]


def test_readable_pieces():
    assert readable("Ġcat", BYTE_LEVEL) == "␣cat"
    assert readable("Ċ", BYTE_LEVEL) == "↵"
    assert readable("ðŁĺĢ", BYTE_LEVEL) == "😀"
    assert readable("ðŁ", BYTE_LEVEL) == "\\xf0\\x9f"  # part of a character: its bytes
    assert readable("▁cat", SENTENCEPIECE) == "␣cat"
    assert readable("<0x0A>", SENTENCEPIECE) == "↵"
    assert readable("##ing", WORDPIECE) == "##ing"


def test_norms_and_cosine():
    h = np.array([[[3.0, 4.0]], [[3.0, 4.0]], [[-4.0, 3.0]]], dtype=np.float32)  # [layer+1, pos, d]
    assert norms(h)[:, 0].tolist() == [5.0, 5.0, 5.0]
    np.testing.assert_allclose(consecutive_cosine(h)[:, 0], [1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_logit_lens_reads_layers_through_the_final_norm_and_unembedding(tiny_dir, kind):
    loaded = load_model(LoadRequest("folder", str(tiny_dir(kind))))
    cap = capture(loaded, "the cat sat on the mat")
    lens = logit_lens(loaded, cap, [1, 4])
    model = loaded.model
    with torch.no_grad():
        logits = model(torch.tensor([cap.sequence.ids])).logits[0]
        probs = torch.softmax(logits, -1)
        # the last layer is the model's own prediction
        np.testing.assert_allclose(lens.top_probs[-1, :, 0], probs[[1, 4]].max(-1).values.numpy(), atol=1e-5)
        assert lens.top_ids[-1, :, 0].tolist() == probs[[1, 4]].argmax(-1).tolist()
        # an earlier layer goes through the final norm first
        norm = model.transformer.ln_f if kind == "gpt2" else model.model.norm
        h = torch.from_numpy(cap.hidden_states[1, [1, 4]])
        p1 = torch.softmax(model.get_output_embeddings()(norm(h)), -1)
        np.testing.assert_allclose(lens.top_probs[1, :, 0], p1.max(-1).values.numpy(), atol=1e-5)
    np.testing.assert_allclose(lens.top_probs.sum(-1) <= 1.0 + 1e-6, True)


def test_character_keys_are_upright_and_larger():
    """The date normalizer's keys are characters: rotated and small they were hard to read."""
    chars = [*"Tuesday, 23rd", "</s>"]
    fig = token_heatmap(np.full((2, len(chars)), 1 / len(chars)), ["a", "b"], chars, "t")
    assert fig.layout.xaxis.tickangle == 0 and fig.layout.xaxis.tickfont.size == 15
    words = token_heatmap(causal_uniform(3), ["the", "cat", "sat"], ["the", "cat", "sat"], "t")
    assert words.layout.xaxis.tickangle == -60 and words.layout.xaxis.tickfont.size == 11
