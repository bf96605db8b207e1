"""The course: a path of short lessons through the transformer, each taught on the loaded model. A lesson
is a few sentences written for this project (with glossary marks, see explorer.lessons.glossary), a
builder that computes what it shows and asks from the model (explorer.lessons.reading and .inside), and,
when it cannot apply to some models, the reason and the embedded model where it does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from explorer.lessons import inside, reading
from explorer.lessons.live import Live
from explorer.models import anatomy
from explorer.models.zoo import DEFAULT_MODEL
from explorer.runs.capture import Capture

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

DATES = "date-normalizer"  # the embedded encoder-decoder


@dataclass(frozen=True)
class Lesson:
    id: str  # in links: ?lesson=<id>
    title: str
    idea: tuple[str, ...]  # the lesson's sentences, one screen's worth; Markdown with glossary marks
    build: Callable[[LoadedModel, str, Capture], Live]
    needs: Callable[[LoadedModel], str | None] = lambda loaded: None  # why it does not apply, or None
    instead: str | None = None  # the embedded model where it applies


def _encoder_decoder(loaded: LoadedModel) -> str | None:
    if loaded.card.family == "encoder-decoder":
        return None
    return (f"{loaded.card.name} is {'an' if loaded.card.family == 'encoder' else 'a'} {loaded.card.family}: "
            "it has no cross-attention. Only an encoder-decoder's decoder reads a second text.")  # fmt: skip


def _generates(loaded: LoadedModel) -> str | None:
    if loaded.card.family != "encoder" and anatomy.of(loaded.model).unembed is not None:
        return None
    return (f"{loaded.card.name} is an encoder without a language-model head that predicts next tokens: it "
            "does not generate text.")  # fmt: skip


def _dense(loaded: LoadedModel) -> str | None:
    a = anatomy.of(loaded.model)
    if not a.blocks(a.output_stack)[0].ffn.experts:
        return None
    return f"{loaded.card.name}'s feed-forward layers are a mixture of experts, not one set of neurons."


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "tokens",
        "Tokens and embeddings",
        (
            "A model never sees letters. Its [[tokenizer|token]] cuts the text into [[tokens|token]], "
            "pieces from a fixed [[vocabulary]], and replaces each with its number.",
            "The first layer turns each number into a vector: the token's row of the [[embedding]] table, "
            "[[d_model]] numbers learned in training. Words used alike end up with similar rows.",
            "Tokenizers add their own markers too (a start token, a separator): they are tokens like the "
            "others.",
        ),
        reading.tokens,
    ),
    Lesson(
        "one-head",
        "One attention head by hand",
        (
            "Attention lets each token gather information from the others. Each token's vector X is "
            "multiplied by three weight matrices: the [[query]] Q asks, the [[key]] K answers, the "
            "[[value]] V is what is handed on.",
            "The score of a query against a key is their dot product, divided by √[[d_head]] to keep it in "
            "a range the [[softmax]] can work with. The softmax turns a query's scores into [[attention "
            "weights|attention weight]] that sum to 1.",
            "The head's output at that token is the weighted sum of the values. Below: the real scores of "
            "one head of this model. Compute one weight yourself.",
        ),
        reading.one_head,
    ),
    Lesson(
        "heads",
        "Many heads",
        (
            "A layer runs several [[heads|head]] side by side, each with its own Q, K and V, so each can "
            "look for something different: the previous word, the subject of a verb, the start of the text.",
            "Their outputs are put side by side and projected back to [[d_model]]. The [[attention "
            "maps|attention map]] below are what each head of one layer read for one token.",
        ),
        reading.heads,
    ),
    Lesson(
        "positions",
        "Where is each token?",
        (
            "Attention on its own has no idea of order: shuffle the words and each token gets the same "
            "weights on the same words. So order must be injected.",
            "Models do it in different ways ([[position encoding]]): a vector per position added to the "
            "embedding (learned, or fixed sine waves), a rotation of queries and keys by their position "
            "([[RoPE]]), or a bias on each score by the distance between query and key (T5's relative "
            "buckets, ALiBi). Rotations and biases let attention read distances directly.",
        ),
        reading.order,
    ),
    Lesson(
        "masks",
        "Encoder, decoder, encoder-decoder",
        (
            "An [[encoder]] (BERT) lets every token see every token: it is made to understand a whole text.",
            "A [[decoder]] (GPT, Llama, Gemma) predicts the next token, so a token must not see the ones "
            "after it: a [[causal mask]] sets their scores to minus infinity and their weights to exactly "
            "0.",
            "An [[encoder-decoder]] (T5, BART) has both: the encoder reads the source, the decoder writes "
            "the output under a causal mask and reads the source through [[cross-attention]].",
        ),
        reading.masks,
    ),
    Lesson(
        "cross-attention",
        "Cross-attention",
        (
            "In an encoder-decoder, each decoder layer has a second attention: its queries come from the "
            "decoder, its keys and values from the encoder's output.",
            "While writing each token, the decoder looks up the parts of the source it needs; in "
            "translation or rewriting, the map often shows which source word each output comes from.",
        ),
        reading.cross,
        _encoder_decoder,
        DATES,
    ),
    Lesson(
        "ffn",
        "The feed-forward network as memory",
        (
            "After attention, each token goes alone through a [[feed-forward network]]: up to a wider layer "
            "of [[neurons|neuron]], a nonlinearity, and back down.",
            "Each neuron works like a key and a value: its input weights match a pattern in the token's "
            "vector, and when it fires it adds its own output vector, scaled by how strongly it fires. Many "
            "facts a model recalls are stored this way.",
        ),
        inside.memory,
        _dense,
        DEFAULT_MODEL,
    ),
    Lesson(
        "residual",
        "The residual stream and normalization",
        (
            "Each token's vector runs from the embedding to the output as the [[residual stream]]: every "
            "sub-layer reads it and adds its result, so information can pass through many layers unchanged.",
            "Norms keep the sizes in range. [[LayerNorm]] takes out the mean and divides by the standard "
            "deviation; [[RMSNorm]] only divides by the root mean square. The original transformer "
            "normalized after each add (post-norm); most models now normalize at the start of each "
            "sub-layer ([[pre-norm]]), which trains deep stacks more steadily.",
        ),
        inside.residual,
    ),
    Lesson(
        "kv-cache",
        "One token at a time, with the KV cache",
        (
            "A model generates by predicting one token, appending it, and predicting again.",
            "The [[keys|key]] and [[values|value]] of the tokens already read do not change, so they are "
            "kept: the [[KV cache]]. Each new step then computes one position and reads the cache, instead "
            "of the whole text again. The price is memory, growing with every token.",
        ),
        inside.kv_cache,
        _generates,
        DEFAULT_MODEL,
    ),
    Lesson(
        "sampling",
        "Choosing the next token",
        (
            "The last layer gives a [[logit]] per vocabulary entry; the softmax makes them probabilities.",
            "Greedy decoding takes the most likely token. Sampling draws one instead, after reshaping: "
            "[[temperature]] sharpens or flattens, [[top-k]] keeps the k most likely, [[top-p]] the "
            "smallest set that reaches probability p. transformers applies them in that order.",
        ),
        inside.sampling,
        _generates,
        DEFAULT_MODEL,
    ),
    Lesson(
        "modern",
        "What modern models changed",
        (
            "Recent decoders keep the same plan and change parts of it. [[Grouped-query "
            "attention|grouped-query attention]] lets several query heads share one key/value head, "
            "shrinking the KV cache. [[RMSNorm]] replaces LayerNorm. Gated feed-forward networks "
            "([[SwiGLU]]) replace the plain one.",
            "Some layers see only a [[sliding window]] of recent tokens (Gemma 3: 512). A [[mixture of "
            "experts]] gives each layer many feed-forward networks and sends each token to a few. SmolLM2 "
            "and Gemma 3, both embedded here, show most of these.",
        ),
        inside.modern,
    ),
    Lesson(
        "questions",
        "Questions a class asks",
        (
            "Why divide by √d_head? Why does a longer text cost so much more? Here are the answers, "
            "measured on this model now.",
        ),
        inside.scaling,
    ),
)

BY_ID = {lesson.id: lesson for lesson in LESSONS}


def absent(lesson: Lesson, loaded: LoadedModel) -> str | None:
    """Why `lesson` does not apply to `loaded`, or None when it does."""
    return lesson.needs(loaded)
