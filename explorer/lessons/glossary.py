"""The words the app uses, each explained in a sentence or two: shown as hover help where they appear (the
lessons' text, the pages' widgets) and as one list on the Lessons page."""

from __future__ import annotations

import re
from html import escape

TERMS: dict[str, str] = {
    "token": "A piece of text the model reads as one unit: a word, part of a word, a byte or a special "
    "marker. The tokenizer cuts the text into tokens and gives each its number (id) in the vocabulary.",
    "vocabulary": "Every token a tokenizer knows, each with its id. The embedding table has one row per "
    "entry, and the model's last layer gives one score (logit) per entry.",
    "embedding": "The vector a token id is turned into before the first layer: its row of the embedding "
    "table (some models add a position vector or scale it).",
    "d_model": "The width of the residual stream: how many numbers stand for each token between layers.",
    "layer": "One block of the transformer: attention, then a feed-forward network, each adding its result "
    "to the residual stream. Models stack a few to dozens of them.",
    "head": "One of the attention computations running side by side in a layer, with its own query, key "
    "and value projections and its own attention map.",
    "query": "A head's question vector at a position: Q = X W_Q. It is compared with every key it may see.",
    "key": "A head's label vector at a position: K = X W_K. A query's dot product with it says how well "
    "the position matches.",
    "value": "What a position hands on when it is attended to: V = X W_V. The head's output is the "
    "attention-weighted sum of the values.",
    "attention weight": "How much one query takes from one key's value: the softmax of the scaled scores "
    "over the keys it may see. A query's weights sum to 1.",
    "attention map": "A head's weights as a table: one row per query, one column per key.",
    "softmax": "exp(z_i) / Σ_j exp(z_j): turns scores into positive weights that sum to 1; the largest "
    "score gets the most.",
    "d_head": "The size of one head's query, key and value vectors (d_k). Q·K^T is divided by √d_head "
    "in most models.",
    "causal mask": "In a decoder a token may not look at later tokens: their scores are set to -infinity "
    "before the softmax, so their weights are exactly 0.",
    "cross-attention": "In an encoder-decoder, the decoder's queries read the encoder's output: keys and "
    "values come from the source text.",
    "position encoding": "How the model learns where each token is. Attention itself ignores order, so "
    "positions are added to the embeddings (learned, sinusoidal) or put into the scores (RoPE, relative "
    "biases, ALiBi).",
    "RoPE": "Rotary position embedding: each pair of a query's and key's dimensions is turned by an angle "
    "proportional to the position, so their dot product depends on the distance between them.",
    "feed-forward network": "The per-token part of a layer (FFN, MLP): up to a wider space, a nonlinearity, "
    "back down. Each hidden unit (neuron) adds its own output vector, scaled by how strongly it fires.",
    "neuron": "One unit of the feed-forward network's hidden layer: a key it matches the token against, "
    "and a value vector it writes when it fires.",
    "residual stream": "The running vector of each token from the embedding to the output. Every "
    "attention and feed-forward sub-layer reads it and adds its result to it.",
    "LayerNorm": "Takes out a vector's mean and divides by its standard deviation, then scales (and "
    "shifts) each dimension by learned weights.",
    "RMSNorm": "Divides a vector by its root mean square and scales each dimension by a learned weight; "
    "no mean is taken out. Cheaper than LayerNorm and used by most recent decoders.",
    "pre-norm": "The norm sits at the start of each sub-layer, inside the residual branch; the stream "
    "itself is never normalized until the final norm. Post-norm normalizes the stream after each add.",
    "logit": "The score the model gives one vocabulary entry for the next token, before the softmax turns "
    "the scores into probabilities.",
    "input attribution": "A score per input token for how much one output (a token's logit) depends on "
    "it: the gradient (saliency), the gradient times the embedding, integrated gradients (the gradient "
    "summed along a path from a neutral input), or the change when the token is replaced (occlusion).",
    "sparse autoencoder": "A small network trained to rewrite a model's residual stream at one layer as a "
    "sum of a few directions (features) out of thousands, each with a strength, and back: features that "
    "fire on related text show what the model represents there.",
    "logit lens": "Reading an intermediate layer's residual stream through the final norm and the "
    "unembedding, as if the model stopped there.",
    "KV cache": "The keys and values of the tokens already read, kept so that each new token computes "
    "only its own: one position per step instead of the whole text again.",
    "temperature": "Logits are divided by it before the softmax: below 1 sharpens the distribution, above "
    "1 flattens it.",
    "top-k": "Only the k most likely tokens stay in the draw; the others get probability 0.",
    "top-p": "Only the smallest set of most likely tokens whose probabilities add up to at least p stays in "
    "the draw (nucleus sampling).",
    "grouped-query attention": "Several query heads share one key/value head (GQA); with one shared "
    "key/value head it is multi-query attention. It shrinks the KV cache.",
    "SwiGLU": "A gated feed-forward network: SiLU(x W_gate) multiplied element-wise by x W_up, then W_down.",
    "sliding window": "A layer whose tokens see only the last w positions, not the whole text.",
    "mixture of experts": "A layer with several feed-forward networks (experts) and a router that sends "
    "each token to a few of them.",
    "encoder": "A stack whose tokens all see each other (bidirectional attention), made to understand a "
    "text: BERT.",
    "decoder": "A stack with a causal mask, made to predict the next token: GPT, Llama, Gemma.",
    "encoder-decoder": "An encoder reads the source; a decoder writes the output, reading the source "
    "through cross-attention: T5, BART.",
}

_ALIASES = {
    "tokens": "token", "embeddings": "embedding", "heads": "head", "layers": "layer", "queries": "query",
    "keys": "key", "values": "value", "attention weights": "attention weight", "logits": "logit",
    "neurons": "neuron", "FFN": "feed-forward network", "GQA": "grouped-query attention",
    "attention maps": "attention map", "post-norm": "pre-norm",
}  # fmt: skip

GLOSS_STYLE = (
    "<style>.gloss{border-bottom:1px dotted #64748b; cursor:help}.gloss:hover{background:#f1f5f9}</style>"
)
_MARK = re.compile(r"\[\[([^\]|]+)(?:\|([^\]]+))?\]\]")


def explain(term: str) -> str:
    """The explanation of `term` (or one of its plural or short forms); KeyError for a word not listed."""
    return TERMS[_ALIASES.get(term, term)]


def help_for(*terms: str) -> str:
    """Widget help text (`help=`) explaining `terms`, one paragraph each."""
    return "\n\n".join(f"**{t}**: {explain(t)}" for t in terms)


def gloss(text: str) -> str:
    """Markdown with glossary marks, `[[term]]` or `[[shown words|term]]`, made into hover help (the shown
    words with the explanation as their title). The text is the project's own; a mark's words and the
    explanations are escaped. The page renders it with unsafe_allow_html and GLOSS_STYLE once."""

    def mark(m: re.Match) -> str:
        shown, term = m.group(1), m.group(2) or m.group(1)
        title = escape(f"{term}: {explain(term)}")
        return f'<span class="gloss" title="{title}">{escape(shown)}</span>'

    return _MARK.sub(mark, text)


def marked_terms(text: str) -> list[str]:
    """The glossary terms `text` marks, as listed in TERMS."""
    return [_ALIASES.get(m.group(2) or m.group(1), m.group(2) or m.group(1)) for m in _MARK.finditer(text)]
