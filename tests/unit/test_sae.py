"""Sparse autoencoders on tiny models: encoding and decoding, TopK's k, SAELens' layout read and written,
training that lowers its loss, the features per token against the model's own hidden states, feature
steering, the model card's figures on an SAE that reconstructs exactly, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explorer.__main__ import main as cli
from explorer.errors import InputError
from explorer.sae import features, train
from explorer.sae.sae import Sae, load

TEXT = "the cat sat on the mat because it was tired"


def random_sae(d_in=32, d_sae=64, k=4, layer=1, seed=0) -> Sae:
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    b_enc, b_dec = torch.randn(d_sae, generator=g) * 0.1, torch.randn(d_in, generator=g) * 0.1
    return Sae(w_dec.T.contiguous(), b_enc, w_dec, b_dec, "topk", layer, k)


def exact_sae(d_in=32, layer=1) -> Sae:
    """relu(x) - relu(-x) = x: a 'standard' SAE of 2 d_in features that reconstructs exactly."""
    eye = torch.eye(d_in)
    return Sae(torch.cat([eye, -eye], 1), torch.zeros(2 * d_in), torch.cat([eye, -eye]), torch.zeros(d_in),
               "standard", layer)  # fmt: skip


def test_topk_keeps_exactly_k_and_decodes_the_sum_of_its_directions():
    sae = random_sae(k=5)
    x = torch.randn(10, 32) * 3
    f = sae.encode(x)
    assert ((f > 0).sum(-1) == 5).all()  # pre-activations this large: 5 positive ones in every row
    kept = torch.relu(sae.pre(x)).topk(5).values
    assert torch.allclose(f.sort(-1, descending=True).values[:, :5], kept)
    assert torch.allclose(sae.decode(f), f @ sae.W_dec + sae.b_dec)


def test_an_sae_of_opposite_pairs_round_trips_exactly():
    sae = exact_sae()
    x = torch.randn(7, 32)
    assert torch.allclose(sae(x), x, atol=1e-6)


def test_saelens_layout_is_written_and_read_back(tmp_path):
    sae = random_sae()
    sae.save(tmp_path, model_name="tiny")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_pre" and cfg["d_in"] == 32 and cfg["d_sae"] == 64
    assert cfg["architecture"] == "topk" and cfg["k"] == 4
    back = load(tmp_path)
    x = torch.randn(3, 32)
    assert torch.equal(back.encode(x), sae.encode(x)) and back.layer == 1


def test_a_jumprelu_folder_as_gemma_scope_writes_it(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w = {"W_enc": torch.randn(32, 16, generator=g), "b_enc": torch.zeros(16),
         "W_dec": torch.randn(16, 32, generator=g), "b_dec": torch.zeros(32),
         "threshold": torch.full((16,), 0.5)}  # fmt: skip
    save_file(w, tmp_path / "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": 32, "d_sae": 16,
                                                   "hook_name": "blocks.0.hook_resid_post"}))  # fmt: skip
    sae = load(tmp_path)
    assert sae.layer == 1  # what leaves block 0 enters block 1
    x = torch.randn(5, 32)
    pre = x @ w["W_enc"]
    assert torch.allclose(sae.encode(x), pre * (pre > 0.5))


def test_what_is_not_an_sae_is_refused(tmp_path):
    with pytest.raises(InputError, match="SAELens' layout"):
        load(tmp_path)
    random_sae().save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(
        json.dumps({**cfg, "hook_layer": None, "hook_name": "blocks.1.attn.hook_z"})
    )
    with pytest.raises(InputError, match="residual stream"):
        load(tmp_path)


def test_training_lowers_the_loss_and_finds_planted_directions():
    """Rows that are sums of 3 of 48 planted unit directions: the loss falls and most planted directions
    get a decoder row close to them."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(48, 32, generator=g)
    truth /= truth.norm(dim=-1, keepdim=True)
    which = torch.stack([torch.randperm(48, generator=g)[:3] for _ in range(6000)])
    x = (truth[which] * (1 + torch.rand(6000, 3, 1, generator=g))).sum(1)
    cfg = train.TrainConfig(d_sae=96, k=3, epochs=8, batch=512, lr=3e-3, dead_tokens=3000)
    sae, history = train.train(x, cfg, log=lambda s: None)
    assert history[-1]["fvu"] < 0.5 * history[0]["fvu"]
    match = (truth @ (sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)).T).max(-1).values
    assert float((match > 0.9).float().mean()) > 0.5


def test_the_pipeline_on_a_tiny_model(tiny_loaded):
    loaded = tiny_loaded("llama")
    ids = train.sequences(loaded.tokenizer, [TEXT] * 40, 500)
    ids = ids[:, : train.CONTEXT]
    x = train.stream_at(loaded, ids, 1)[:, 1:].reshape(-1, 32)
    sae, _ = train.train(x, train.TrainConfig(d_sae=64, k=4, epochs=1, batch=128), log=lambda s: None)
    sae.layer = 1
    ctx = train.top_contexts(sae, x, ids)
    assert ctx["context_ids"].shape == (64, train.TOP_CONTEXTS, 2 * train.WINDOW + 1)
    f = sae.encode(x)
    best = int(f.max(0).values.argmax())
    assert float(ctx["top_acts"][best, 0]) == pytest.approx(float(f[:, best].max()), abs=1e-5)
    mid = ctx["context_acts"][best, 0, train.WINDOW]  # the top activation, in the middle of its window
    assert float(mid) == pytest.approx(float(f[:, best].max()), rel=1e-2)  # stored as float16
    assert float(ctx["frequency"][best]) == pytest.approx(float((f[:, best] > 0).float().mean()))


def test_features_per_token_read_the_models_own_stream(tiny_loaded):
    loaded = tiny_loaded("llama")
    sae = random_sae(layer=1)
    found = features.on_text(loaded, sae, TEXT)
    ids = loaded.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states[1][0]  # entering block 1
    want = sae.encode(hidden).numpy()
    want[0] = 0  # the first position is not read
    assert np.allclose(found.acts, want, atol=1e-5)
    rows = found.to_rows(3)
    assert rows[2]["pos"] == 2 and len(rows[2]["top"]) <= 3
    assert rows[2]["top"][0]["activation"] == pytest.approx(float(want[2].max()), abs=1e-5)


def test_feature_steering_adds_or_clamps_the_direction(tiny_loaded):
    loaded = tiny_loaded("llama")
    sae = random_sae(layer=1, k=6)
    x = torch.randn(1, 5, 32)
    clamp = features.FeatureSteer(sae, 7, 2.5, "clamp").hook(loaded.model).fn(x)
    f = sae.encode(x)[0, :, 7]
    want = (2.5 - f)[:, None] * sae.W_dec[7]
    assert torch.allclose(clamp[0, 1:] - x[0, 1:], want[1:], atol=1e-6)
    assert torch.equal(clamp[0, 0], x[0, 0])  # the first position of a prompt is left alone
    add = features.FeatureSteer(sae, 7, -3.0).hook(loaded.model).fn(x[:, -1:])  # one new token
    assert torch.allclose(add - x[:, -1:], -3.0 * sae.W_dec[7], atol=1e-6)


def test_adding_zero_of_a_feature_changes_nothing(tiny_loaded):
    from explorer.runs.stepping import Settings, Stepper

    loaded = tiny_loaded("llama")
    zero = features.FeatureSteer(random_sae(layer=1), 3, 0.0)
    plain, steered = Stepper.start(loaded, TEXT), Stepper.start(loaded, TEXT, steer=zero)
    for _ in range(3):
        assert torch.equal(plain._state.logits, steered._state.logits)
        assert plain.step(Settings()).token_id == steered.step(Settings()).token_id


def test_an_exact_sae_recovers_all_the_loss(tiny_loaded):
    loaded = tiny_loaded("llama")
    ids = train.sequences(loaded.tokenizer, [TEXT] * 60, 300)
    found = features.evaluate(loaded, exact_sae(), ids)
    assert found["fvu"] < 1e-10 and found["ce_sae"] == pytest.approx(found["ce_clean"], abs=1e-4)
    assert found["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert abs(found["ce_zero"] - found["ce_clean"]) > 1e-3  # zeroing the stream changes the loss
    assert found["l0"] == pytest.approx(32, abs=1)  # every dimension: one of its pair fires


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bloom", "gpt_bigcode"])
def test_the_cards_cross_entropies_are_those_of_three_passes(tiny_loaded, kind):
    """evaluate's clean, spliced and zeroed cross-entropies, from one pass branched at the SAE's block (or,
    where the model code cannot branch, Bloom's and GPT-BigCode's, three passes), against three forward
    passes with a plain torch hook, on 9 sequences (batches of 4, 4 and 1)."""
    from explorer.models import anatomy

    loaded = tiny_loaded(kind)
    sae = random_sae(layer=1)
    words = torch.tensor(loaded.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    ids = torch.stack([words.roll(i) for i in range(9)])
    found = features.evaluate(loaded, sae, ids)
    a = anatomy.of(loaded.model)
    block = a.stacks[a.output_stack].blocks[1].module
    for kind_ in ("clean", "sae", "zero"):

        def splice(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            y = x.clone()
            if kind_ != "clean":
                y[:, 1:] = sae(x[:, 1:]) if kind_ == "sae" else 0.0
            return ((y, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": y})

        handle = block.register_forward_pre_hook(splice, with_kwargs=True)
        try:
            with torch.no_grad():
                logits = loaded.model(ids, use_cache=False).logits[:, :-1]
        finally:
            handle.remove()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        assert found[f"ce_{kind_}"] == pytest.approx(float(ce), abs=1e-5), kind_


def test_a_cards_figures_are_made_of_its_batches_sums(tiny_loaded):
    """measure() gives one row per batch, the same row when a batch is measured alone, and figures() of
    the rows is evaluate(): what lets a check of the card rerun a few batches only."""
    loaded = tiny_loaded("gpt2")
    sae = random_sae(layer=1)
    words = torch.tensor(loaded.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    ids = torch.stack([words.roll(i) for i in range(9)])
    every = features.measure(loaded, sae, ids)
    assert {k: tuple(v.shape) for k, v in every.items()} == {
        "sums": (3, 8),
        "x_sum": (3, 32),
        "fired": (3, 64),
    }
    some = features.measure(loaded, sae, ids, only=[2, 0])
    for key in every:
        assert torch.allclose(some[key][0].double(), every[key][2].double(), rtol=1e-6)
        assert torch.allclose(some[key][1].double(), every[key][0].double(), rtol=1e-6)
    assert features.figures(every) == pytest.approx(features.evaluate(loaded, sae, ids), rel=1e-9)
    assert every["sums"][:, features.SUMS.index("n")].tolist() == [4 * (ids.shape[1] - 1)] * 2 + [
        ids.shape[1] - 1
    ]


def test_an_sae_for_another_width_is_refused(tiny_loaded):
    with pytest.raises(InputError, match="numbers"):
        features.on_text(tiny_loaded("llama"), random_sae(d_in=48), TEXT)


def test_the_command_prints_one_object_per_token(tiny_dir, tmp_path, capsys):
    random_sae(layer=1).save(tmp_path / "sae")
    assert (
        cli(["features", str(tiny_dir("llama")), "--text", TEXT, "--sae", str(tmp_path / "sae"), "--json"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pos"] for r in rows] == list(range(len(rows))) and {"pos", "token", "top"} == set(rows[0])
    assert rows[0]["top"] == [] and all(len(r["top"]) <= 8 for r in rows)
    assert {"feature", "activation"} == set(rows[1]["top"][0])


def test_the_training_command_on_a_tiny_model_and_corpus(tiny_dir, tmp_path):
    """python -m explorer.sae.train, end to end in seconds: the loss falls, the folder reads back, and its
    card holds the figures the saved weights give."""
    words = "the cat sat on the mat because it was tired and the dog was not".split()
    rng = np.random.default_rng(0)
    (tmp_path / "corpus.txt").write_text("\n\n".join(" ".join(rng.choice(words, 40)) for _ in range(120)))
    out = tmp_path / "sae"
    args = ["--model", str(tiny_dir("llama")), "--layer", "1", "--tokens", "4000", "--d-sae", "64",
            "--k", "4", "--epochs", "4", "--batch", "256", "--eval-sequences", "4", "--dead-tokens", "2000",
            "--corpus", str(tmp_path / "corpus.txt"), "--out", str(out)]  # fmt: skip
    assert train.main(args) == 0
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["mse"] < history[0]["mse"]
    sae = load(out)
    assert (sae.d_in, sae.d_sae, sae.k, sae.layer) == (32, 64, 4, 1)
    card = sae.cfg["evaluation"]
    assert card["l0"] <= 4 and 0 <= card["fvu"] < 1
    assert f"{card['loss_recovered']:.3f}" in (out / "README.md").read_text()
    assert features.saved_contexts(sae)["context_ids"].shape[:2] == (64, train.TOP_CONTEXTS)
    assert features.figures(features.saved_evaluation(sae)) == pytest.approx(card)  # 1 batch of 4


def test_top_contexts_are_drawn_as_text():
    from explorer.figures.features import contexts_html

    html = contexts_html([(["<script>alert(1)</script>", " ok"], [2.0, 0.5], 2.0)])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "rgba(234, 88, 12, 1.00)" in html and "rgba(234, 88, 12, 0.25)" in html  # shaded by activation
