"""The embedded date normalizer: its generated data, its committed weights, and its cross-attention."""

from __future__ import annotations

import datetime as dt
import json
import random
import re

import pytest
import torch

from explorer import __main__ as cli
from explorer.dates import data as dates
from explorer.dates.train import TEST_SIZE, accuracy, held_out, year_attention
from explorer.errors import LoadError
from explorer.models import zoo
from explorer.models.loading import LoadRequest, load_model

FOLDER = zoo.REPO_ROOT / "explorer" / "weights" / "date-normalizer"


@pytest.fixture(scope="module")
def normalizer():
    """The committed weights and tokenizer, read as any user would read them."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    model = AutoModelForSeq2SeqLM.from_pretrained(FOLDER, attn_implementation="eager").eval()
    return model, tokenizer


def test_rendered_dates_name_their_own_day():
    """Every rendering, parsed back by hand, gives its target: day, month, year and weekday agree."""
    months = {m.lower(): i + 1 for i, m in enumerate(dates.MONTHS)}
    months.update({m[:3].lower(): i + 1 for i, m in enumerate(dates.MONTHS)} | {"sept": 9})
    weekdays = {w.lower(): i for i, w in enumerate(dates.WEEKDAYS)} | {
        w[:3].lower(): i for i, w in enumerate(dates.WEEKDAYS)
    }
    train_days, _ = dates.split_days()
    seen_weekdays = 0
    for source, target, fmt in dates.examples(train_days, 4000, seed=3):
        day = dt.date.fromisoformat(target)
        words = re.findall(r"[a-z]+|\d+", source.lower())
        numbers = [int(w) for w in words if w.isdigit()]
        names = [w for w in words if w not in ("st", "nd", "rd", "th", "the", "of")]
        if fmt == "iso":
            assert source == target
            continue
        assert day.year in numbers and day.day in numbers, source
        named = [months[w] for w in names if w in months]
        assert named == [day.month] if not fmt.startswith("numeric") else day.month in numbers, source
        for w in names:
            if w in weekdays:
                assert weekdays[w] == day.weekday(), source
                seen_weekdays += 1
            else:
                assert w.isdigit() or w in months, (w, source)
    assert seen_weekdays > 500  # weekdays are written often enough to matter


def test_every_format_with_its_variations():
    rng = random.Random(0)
    day = dt.date(2026, 11, 23)  # a Monday
    written = {fmt: {dates.render(day, fmt, rng) for _ in range(300)} for fmt in dates.FORMATS}
    assert written["iso"] == {"2026-11-23"}
    assert written["numeric-slash"] >= {"23/11/2026", "Monday, 23/11/2026", "Mon 23/11/2026"}
    assert {"23.11.2026", "23-11-2026"} <= written["numeric-dot"] | written["numeric-dash"]
    assert {"23rd Nov 2026", "23 November 2026"} <= written["day-month-year"]
    everything = " ".join(s for group in written.values() for s in group)
    for piece in ("November 23rd, 2026", "the 23rd of", "Nov. ", "NOVEMBER", "monday", "2026, Nov 23"):
        assert piece in everything, piece
    assert dates.render(dt.date(2026, 3, 5), "numeric-dot", random.Random(1)) in ("5.3.2026", "05.03.2026")
    with pytest.raises(ValueError, match="unknown date format"):
        dates.render(day, "american", rng)


def test_held_out_days_never_train():
    train_days, test_days = dates.split_days()
    assert not set(train_days) & set(test_days)
    assert len(train_days) + len(test_days) == len(dates.all_days()) == 73_049  # 1900-01-01 .. 2099-12-31
    assert dates.split_days() == (train_days, test_days)  # the same split every time
    test = held_out()
    assert len(test) == TEST_SIZE and {f for _, _, f in test} == set(dates.FORMATS)
    assert {dt.date.fromisoformat(t) for _, t, _ in test} <= set(test_days)


def test_ordinals_and_year_span():
    assert [dates.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st",
    ]  # fmt: skip
    assert dates.year_span("Mon, 05.03.2026") == (11, 15)
    with pytest.raises(ValueError):
        dates.year_span("05.03.26")


def test_tokenizer_is_one_token_per_character(normalizer):
    _, tokenizer = normalizer
    text = "Monday, Nov. 23rd 2026"
    ids = tokenizer(text).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == list(text) + ["</s>"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)


def test_accuracy_on_held_out_dates(normalizer):
    """At least 99 % exact match by greedy generate on 1,000 held-out dates, and 97 % in every format."""
    model, tokenizer = normalizer
    scores = accuracy(model, tokenizer, held_out())
    assert scores["n"] == TEST_SIZE
    assert scores["overall"] >= 0.99, scores["wrong"][:10]
    assert min(scores["per_format"].values()) >= 0.97, scores["per_format"]


def test_generate_stops_at_eos(normalizer):
    model, tokenizer = normalizer
    batch = tokenizer(["Tuesday, 1st of January 1901", "31/12/2099"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**batch, do_sample=False, max_new_tokens=40)
    assert ids[:, 0].tolist() == [model.config.decoder_start_token_id] * 2
    assert ids.shape[1] == 1 + len("YYYY-MM-DD") + 1  # start, ten characters, eos: no run past eos
    assert ids[:, -1].tolist() == [tokenizer.eos_token_id] * 2
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == ["1901-01-01", "2099-12-31"]


def test_cross_attention_looks_at_the_year_while_writing_it(normalizer):
    """Teacher-forced with the correct output, the last decoder layer's cross-attention (mean of heads)
    puts most of its weight on the input's four year characters at each step that writes a year digit."""
    model, tokenizer = normalizer
    examples = held_out()[:200]
    shares = year_attention(model, tokenizer, examples)  # [example, 4]
    assert shares.shape == (200, 4)
    assert shares.mean() > 0.8, shares.mean()
    assert (shares > 0.5).float().mean() > 0.98, shares.min()


def test_cross_attention_rows_are_distributions(normalizer):
    """The maps `model(..., output_attentions=True)` returns: [batch, head, tgt, src], rows summing to 1,
    no weight on padding."""
    model, tokenizer = normalizer
    batch = tokenizer(["23 Nov 2026", "Monday, November 23rd, 2026"], padding=True, return_tensors="pt")
    target = tokenizer(text_target=["2026-11-23"] * 2, return_tensors="pt").input_ids
    decoder_input_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), target[:, :-1]], dim=1)
    with torch.no_grad():
        out = model(**batch, decoder_input_ids=decoder_input_ids, output_attentions=True)
    cross = out.cross_attentions
    assert len(cross) == model.config.num_decoder_layers
    assert cross[-1].shape == (2, model.config.num_heads, 11, batch.input_ids.shape[1])
    assert torch.allclose(cross[-1].sum(-1), torch.ones(2, model.config.num_heads, 11), atol=1e-5)
    n_short = len("23 Nov 2026") + 1
    assert cross[-1][0, :, :, n_short:].abs().max() < 1e-6


def test_embedded_entry_loads_from_the_repository():
    item = zoo.entry("date-normalizer")
    assert item.package is None and item.package_dir() == FOLDER
    assert re.fullmatch(r"[0-9a-f]{12}", item.version) and item.cache_key == f"date-normalizer-{item.version}"
    loaded = load_model(LoadRequest.parse("date-normalizer"))
    assert loaded.weights_from == str(FOLDER)
    card = loaded.card
    assert (card.family, card.architecture) == ("encoder-decoder", "T5ForConditionalGeneration")
    assert (card.encoder_layers, card.decoder_layers, card.n_heads) == (3, 1, 4)
    assert card.n_params == sum(p.numel() for p in loaded.model.parameters())
    assert loaded.model.config._attn_implementation == "eager"


def test_missing_repository_folder_says_how_to_rebuild(tmp_path):
    item = zoo.ZooEntry(
        name="gone", title="Gone", family="encoder-decoder", package=None, module=None, summary="",
        locate=zoo.entry("date-normalizer").locate, converts=False, folder=str(tmp_path / "nothing"),
    )  # fmt: skip
    with pytest.raises(LoadError, match="explorer.dates.train"):
        item.package_dir()


def test_cli_lists_it_and_prints_its_card(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (
        rows["date-normalizer"]["family"] == "encoder-decoder" and rows["date-normalizer"]["package"] is None
    )
    assert cli.main(["info", "date-normalizer"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "date-normalizer" and card["architecture"] == "T5ForConditionalGeneration"
    assert (card["encoder_layers"], card["decoder_layers"]) == (3, 1)
