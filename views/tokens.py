"""Tokens: the text as the loaded model's tokenizer splits it, and the same text in a second tokenizer."""

import pandas as pd
import streamlit as st

from explorer import session
from explorer.analyses import token_table
from explorer.errors import LoadError
from explorer.lessons.glossary import help_for
from explorer.models import zoo
from explorer.web.display import md
from views.common import model_or_stop, share, shared_text

OTHER = "tokens_other"
TRICKY = "Tokenizers split text into pieces: unbelievable, naïve café, 12345, 🙂 and\nnew lines."
MAX_CHARS = 20_000


@st.cache_resource(show_spinner=False)
def other_tokenizer(name: str):
    """An embedded model's tokenizer alone (shared by every session, like the models)."""
    return token_table.embedded_tokenizer(name)


def table(rows: list[token_table.TokenRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "#": [r.index for r in rows],
            "id": [r.id for r in rows],
            "piece (stored)": [r.piece for r in rows],
            "text": [r.text for r in rows],
            "special": ["yes" if r.special else "" for r in rows],
        }
    )


def show(rows: list[token_table.TokenRow], context: int | None) -> None:
    n_special = sum(r.special for r in rows)
    st.metric("Tokens", f"{len(rows):,}", help=f"{n_special} special")
    if context and len(rows) > context:
        st.warning(
            f"{len(rows):,} tokens: longer than this model's context of {context:,}; it cannot read this "
            "text in one pass."
        )
    st.html(token_table.chips_html(rows))


st.title("Tokens", help=help_for("token", "vocabulary", "embedding"))
st.caption(
    "A model never sees letters: its tokenizer cuts the text into pieces from a fixed vocabulary and "
    "gives each an id. Hover a chip for its id and how the tokenizer stores it; ␣ is a space, ↵ a new line, "
    "grey dashed chips are special tokens the tokenizer adds."
)
loaded = model_or_stop()

if st.button("Example: the tricky cases", help="Puts a text with rare words, accents, digits, an emoji and "
             "a new line in the text box (for every page)."):  # fmt: skip
    st.session_state[session.TEXT] = TRICKY
text = shared_text(loaded, height=100)  # the workspace's text, the same on every page
share(session.TEXT)  # the model and the text in the URL: a copied link opens this page on them
if not text.strip():
    st.error("The text is empty: type something to tokenize.")
    st.stop()
if len(text) > MAX_CHARS:
    st.error(f"The text is {len(text):,} characters; this page takes at most {MAX_CHARS:,}. Shorten it.")
    st.stop()

rows = token_table.split(loaded.tokenizer, text)
style = token_table.style_name(loaded.tokenizer)
st.subheader(f"{md(loaded.card.name)} · {md(style)} · vocabulary {loaded.card.vocab_size:,}")
show(rows, loaded.card.context_length)
with st.expander("Table: ids and pieces", expanded=True):
    st.dataframe(table(rows), hide_index=True, width="stretch")

st.subheader("Side by side")
names = list(zoo.ZOO)
default = next((n for n in names if n != loaded.request.ref), names[0])
other = st.selectbox(
    "Second tokenizer (an embedded model's)", names, index=names.index(default), key=OTHER,
    format_func=lambda n: zoo.ZOO[n].title,
)  # fmt: skip
try:
    with st.spinner(f"Loading the tokenizer of {md(other)} …"):
        tok2 = other_tokenizer(other)
except LoadError as err:
    st.error(md(err))
    st.stop()
rows2 = token_table.split(tok2, text)
left, right = st.columns(2)
with left:
    st.markdown(f"**{md(loaded.card.name)}** ({md(style)})")
    show(rows, loaded.card.context_length)
with right:
    st.markdown(f"**{md(zoo.ZOO[other].title)}** ({md(token_table.style_name(tok2))})")
    show(
        rows2,
        getattr(tok2, "model_max_length", None) if getattr(tok2, "model_max_length", 0) < 10**7 else None,
    )
ratio = len(rows2) / max(len(rows), 1)
st.caption(f"{len(text):,} characters: {len(rows):,} tokens here, {len(rows2):,} there ({ratio:.2f}×).")
