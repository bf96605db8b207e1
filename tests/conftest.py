"""Shared fixtures: tiny checkpoints of each family, built from configs and saved like a user's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """Under pytest-xdist each test process gives torch's threads its share of the cores (on 2 cores, 2
    processes: one thread each), and so does what it starts (OMP_NUM_THREADS): the browser tests' app
    server, the commands. torch's threads wait for each other by spinning, so more of them than cores is
    slow: the server's head scan beside a one-thread test process took 254 s with 2 threads, 88 s with 1."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


# Under pytest-xdist (`make test`) the browser tests run in two processes, each with its own app server and
# Chromium, one after the other in each, and start first: the lessons walked on every model (4 to 6 min
# on the project's 2-core machine) in one, the other browser files in the other (13 to 20 min in all, the
# longest first). Then every process takes the other test files, one at a time, the longest first, so that
# the processes finish together. (All the browser tests in one process made it the last to finish, by 3 to
# 5 minutes, once the other files had been cut to less work than they had.)
SECOND_BROWSER = "tests/e2e/test_lessons_page.py"
LONGEST = (
    "tests/e2e/test_lessons_page.py",
    "tests/e2e/test_class_walk.py",
    "tests/e2e/test_attention_page.py",
    "tests/e2e/test_experiments_page.py",
    "tests/unit/test_embedded_unchanged.py",
    "tests/app/test_learn_pages.py",
    "tests/unit/test_experiments_embedded.py",
    "tests/unit/test_embedded.py",
    "tests/unit/test_sae_embedded.py",
    "tests/unit/test_instruments_embedded.py",
    "tests/app/test_attention_pages.py",
    "tests/app/test_bad_input.py",
    "tests/app/test_experiments_page.py",
    "tests/app/test_generate_page.py",
    "tests/app/test_links.py",
    "tests/app/test_flow_page.py",
)


def _file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def _browser(path: str) -> bool:
    return path.startswith("tests/e2e/")


def pytest_xdist_make_scheduler(config, log):
    """Whole test files, in the order of pytest_collection_modifyitems; the browser tests in two processes
    (SECOND_BROWSER in one, the other browser files in the other)."""
    from xdist.scheduler import LoadScopeScheduling

    class BrowserTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = _file(nodeid)
            if path == SECOND_BROWSER:
                return "browser 2"
            return "browser" if _browser(path) else path

    return BrowserTestsTogether(config, log)


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the order does not matter

    def rank(item) -> tuple[bool, int]:
        path = _file(item.nodeid)
        return (not _browser(path), LONGEST.index(path) if path in LONGEST else len(LONGEST))

    items.sort(key=rank)  # stable: each file's tests keep their order


WORDS = (
    "the cat sat on mat because it was tired a dog ran to park and then slept "
    "date year month day is in of for with what where who when how big small"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}


def tiny_tokenizer():
    """A word-level tokenizer over a fixed vocabulary, made with the tokenizers library."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", bos_token="<s>", eos_token="</s>",
    )  # fmt: skip


def tiny_config(kind: str):
    """Configs of 2-3 layers, hidden size 32, 4 heads, with `architectures` set as save_pretrained would."""
    import transformers as tf

    v = len(VOCAB)
    ids = dict(pad_token_id=VOCAB["[PAD]"], bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"])
    configs = {
        "bert": tf.BertConfig(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64,
        ),
        "gpt2": tf.GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=64),
        "llama": tf.LlamaConfig(
            vocab_size=v, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        ),
        "t5": tf.T5Config(
            vocab_size=v, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
            num_heads=4, decoder_start_token_id=0, pad_token_id=0,
        ),
        "bart": tf.BartConfig(
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        ),
        # The kinds below share one shape: 2 layers (2 + 2 for encoder-decoders), hidden size 32, 4 query
        # heads (2 key/value heads where the architecture has grouped-query attention), intermediate 64,
        # 128 positions, and the tokenizer's special ids: pad 0 ([PAD]), bos 5 (<s>), eos 6 (</s>).
        "gpt_neox": tf.GPTNeoXConfig(  # Pythia: partial rotary, parallel residual
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True, **ids,
        ),
        "opt": tf.OPTConfig(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
            max_position_embeddings=128, **ids,
        ),
        "mistral": tf.MistralConfig(  # a window of 4 tokens, shorter than the test sentences
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, sliding_window=4, **ids,
        ),
        "qwen2": tf.Qwen2Config(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, **ids,
        ),
        "qwen3": tf.Qwen3Config(  # q/k RMSNorm per head
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=64, max_position_embeddings=128, **ids,
        ),
        "phi3": tf.Phi3Config(  # fused qkv_proj and gate_up_proj
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, original_max_position_embeddings=128, **ids,
        ),
        "olmo2": tf.Olmo2Config(  # post-norm of each sublayer's output, q/k RMSNorm over all heads
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, **ids,
        ),
        "gemma3_text": tf.Gemma3TextConfig(  # scale 1/sqrt(16) = 0.25, not 1/sqrt(d_head = 8)
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=64, max_position_embeddings=128, sliding_window=4,
            layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
            attn_logit_softcapping=None, **ids,
        ),
        "bloom": tf.BloomConfig(  # ALiBi, no position embeddings; the MLP is always 4 x hidden
            vocab_size=v, hidden_size=32, n_layer=2, n_head=4, **ids,
        ),
        "gptj": tf.GPTJConfig(  # interleaved rotary on the first 4 of each head's 8 dimensions
            vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128, rotary_dim=4, **ids,
        ),
        "falcon": tf.FalconConfig(  # Falcon-7B style: parallel attention, multi-query (1 key/value head)
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=64,
            max_position_embeddings=128, new_decoder_architecture=False, parallel_attn=True,
            multi_query=True, **ids,
        ),
        "phi": tf.PhiConfig(  # rotary on half of each head, parallel attention and MLP
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, partial_rotary_factor=0.5, **ids,
        ),
        "roberta": tf.RobertaConfig(  # positions count from pad id + 1, so 127 tokens fit in 128 rows
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, **ids,
        ),
        "distilbert": tf.DistilBertConfig(
            vocab_size=v, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128,
            pad_token_id=0,
        ),
        "electra": tf.ElectraConfig(
            vocab_size=v, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
        ),
        "albert": tf.AlbertConfig(  # one group of shared weights, run num_hidden_layers times
            vocab_size=v, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_hidden_groups=1,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, **ids,
        ),
        "mbart": tf.MBartConfig(
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
            decoder_start_token_id=6, forced_eos_token_id=6, **ids,
        ),
        "marian": tf.MarianConfig(  # sinusoidal positions; the decoder starts from the pad id
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
            decoder_start_token_id=0, forced_eos_token_id=6, pad_token_id=0, eos_token_id=6,
        ),
        # Found by styles.discover (not in its STYLES), or a STYLES line added after the first wave
        "gemma2": tf.Gemma2Config(  # sandwich norms, attention softcap, a sliding layer
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=64, max_position_embeddings=128, sliding_window=4,
            query_pre_attn_scalar=16, attn_logit_softcapping=5.0, **ids,
        ),
        "cohere": tf.CohereConfig(  # one norm, attention and MLP in parallel, rotary on interleaved pairs
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, **ids,
        ),
        "starcoder2": tf.Starcoder2Config(  # mlp.c_fc / c_proj, LayerNorm, biases
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, sliding_window=None, **ids,
        ),
        "gpt_bigcode": tf.GPTBigCodeConfig(  # fused c_attn with one key/value head (multi-query)
            vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128, multi_query=True,
            **ids,
        ),
        "biogpt": tf.BioGptConfig(  # a BART-like decoder: out_proj, fc1/fc2, learned positions
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, **ids,
        ),
        "pegasus": tf.PegasusConfig(  # pre-norm encoder-decoder, sinusoidal positions
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
            decoder_start_token_id=0, forced_eos_token_id=6, pad_token_id=0, eos_token_id=6,
        ),
    }  # fmt: skip
    return configs[kind]


MODEL_CLASSES = {
    "bert": "BertForMaskedLM",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "gpt_neox": "GPTNeoXForCausalLM",
    "opt": "OPTForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "bloom": "BloomForCausalLM",
    "gptj": "GPTJForCausalLM",
    "falcon": "FalconForCausalLM",
    "phi": "PhiForCausalLM",
    "roberta": "RobertaForMaskedLM",
    "distilbert": "DistilBertForMaskedLM",
    "electra": "ElectraForMaskedLM",
    "albert": "AlbertForMaskedLM",
    "mbart": "MBartForConditionalGeneration",
    "marian": "MarianMTModel",
    "gemma2": "Gemma2ForCausalLM",
    "cohere": "CohereForCausalLM",
    "starcoder2": "Starcoder2ForCausalLM",
    "gpt_bigcode": "GPTBigCodeForCausalLM",
    "biogpt": "BioGptForCausalLM",
    "pegasus": "PegasusForConditionalGeneration",
}
FAMILIES = {
    "bert": "encoder",
    "gpt2": "decoder",
    "llama": "decoder",
    "t5": "encoder-decoder",
    "bart": "encoder-decoder",
    **dict.fromkeys(
        ("gpt_neox", "opt", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma3_text", "bloom", "gptj",
         "falcon", "phi", "gemma2", "cohere", "starcoder2", "gpt_bigcode", "biogpt"),
        "decoder",
    ),
    **dict.fromkeys(("roberta", "distilbert", "electra", "albert"), "encoder"),
    **dict.fromkeys(("mbart", "marian", "pegasus"), "encoder-decoder"),
}  # fmt: skip
# Every kind tiny_config builds (each key is the config's model_type).
ARCHITECTURES = (
    "bert", "gpt2", "llama", "t5", "bart",
    "gpt_neox", "opt", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma3_text", "bloom", "gptj", "falcon",
    "phi", "roberta", "distilbert", "electra", "albert", "mbart", "marian",
    "gemma2", "cohere", "starcoder2", "gpt_bigcode", "biogpt", "pegasus",
)  # fmt: skip


def load_as_folder(model, folder: Path):
    """`model` and the tiny tokenizer saved like a user's folder, loaded back through explorer.loading."""
    from explorer.models.loading import LoadRequest, load_model

    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return load_model(LoadRequest("folder", str(folder)))


def save_tiny(kind: str, folder: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = getattr(tf, MODEL_CLASSES[kind])(tiny_config(kind))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Returns a function kind -> folder of a saved tiny checkpoint (built once per test session)."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = save_tiny(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
        return made[kind]

    return get


@pytest.fixture(scope="session")
def tiny_loaded(tiny_dir):
    """Returns a function kind -> the tiny checkpoint loaded through explorer.models.loading (once per test
    session: like the app's shared models, tests only read them)."""
    from explorer.models.loading import LoadRequest, load_model

    made: dict = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = load_model(LoadRequest("folder", str(tiny_dir(kind))))
        return made[kind]

    return get


def no_hooks(model) -> bool:
    """No hook of ours is left on any module. transformers' own `output_capturing_hook`s (installed for
    good by a first run with output_attentions or output_hidden_states, inert otherwise) are not ours."""

    def ours(hooks: dict) -> list:
        return [h for h in hooks.values() if getattr(h, "__name__", "") != "output_capturing_hook"]

    return all(not ours(m._forward_hooks) and not ours(m._forward_pre_hooks) for m in model.modules())


MOE_KINDS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


def tiny_moe(kind: str):
    """A tiny mixture-of-experts decoder (mixtral, qwen2_moe, qwen3_moe, olmoe) with the tiny tokenizer and a
    lock, as the analyses read a loaded model."""
    import threading
    from types import SimpleNamespace

    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    if kind == "mixtral":
        model = tf.MixtralForCausalLM(tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common))
    elif kind == "qwen2_moe":
        config = tf.Qwen2MoeConfig(
            num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24,
            shared_expert_intermediate_size=24, norm_topk_prob=False, **common,
        )  # fmt: skip
        model = tf.Qwen2MoeForCausalLM(config)
    elif kind == "qwen3_moe":
        config = tf.Qwen3MoeConfig(
            num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24, norm_topk_prob=True, **common
        )
        model = tf.Qwen3MoeForCausalLM(config)
    else:
        model = tf.OlmoeForCausalLM(tf.OlmoeConfig(num_experts=5, num_experts_per_tok=2, **common))
    model.eval()
    return SimpleNamespace(model=model, tokenizer=tiny_tokenizer(), lock=threading.RLock())
