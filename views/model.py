"""The Model page: the architecture card and the block diagram of the loaded model."""

import streamlit as st

from explorer import session
from explorer.figures.model import architecture_diagram, parameter_chart
from explorer.models import devices
from explorer.models.card import parameter_groups
from explorer.web.display import md
from views.common import no_model, share

loaded = session.current_model()
if loaded is None:
    st.title("Model")
    no_model()
    st.stop()
share()  # the model in the URL: a copied link opens this page on it

card = loaded.card
st.title(md(card.name))
origin = f"loaded from {md(loaded.weights_from)} in {loaded.load_seconds:.1f} s"
st.caption(f"{card.architecture} · {card.family} · {origin}")

cols = st.columns(5)
cols[0].metric("Parameters", devices.human_count(card.n_params))
cols[1].metric(
    "Layers",
    card.n_layers if card.family != "encoder-decoder" else f"{card.encoder_layers} + {card.decoder_layers}",
)
cols[2].metric("Heads (q / kv)", f"{card.n_heads} / {card.n_kv_heads}")
cols[3].metric("Hidden size", card.d_model)
cols[4].metric("Memory", devices.human_bytes(card.memory_bytes))

left, right = st.columns([2, 3])
with left:
    st.subheader("Architecture card")
    rows = {
        "Family": card.family,
        "Architecture class": card.architecture,
        "Model type": card.model_type,
        "Parameters": f"{card.n_params:,}",
        "Layers": str(card.n_layers),
        "Encoder / decoder layers": f"{card.encoder_layers} / {card.decoder_layers}"
        if card.family == "encoder-decoder"
        else None,
        "Attention": card.attention,
        "Query heads": str(card.n_heads),
        "Key/value heads": str(card.n_kv_heads),
        "Head size": str(card.d_head),
        "Hidden size (d_model)": str(card.d_model),
        "Feed-forward size": str(card.d_ff) if card.d_ff else "?",
        "Feed-forward": card.ffn,
        "Activation": card.activation,
        "Vocabulary": f"{card.vocab_size:,}",
        "Context length": f"{card.context_length:,}" if card.context_length else "not fixed",
        "Position encoding": card.position_encoding,
        "Normalization": f"{card.norm}; {card.norm_placement}",
        "Sliding window": f"{card.sliding_window} tokens" if card.sliding_window else None,
        "Embeddings tied to LM head": "yes" if card.tied_embeddings else "no",
        "Chat template": "yes" if card.chat_template else "no",
        "dtype": card.dtype,
        "Device": card.device,
        "Memory (weights and buffers)": devices.human_bytes(card.memory_bytes),
    }
    shown = [{"Property": k, "Value": md(v)} for k, v in rows.items() if v is not None]
    st.table(shown, hide_index=True, border="horizontal")
with right:
    st.subheader("Block diagram")
    st.plotly_chart(architecture_diagram(card), width="content", config={"displaylogo": False})
    st.plotly_chart(parameter_chart(parameter_groups(loaded.model)), config={"displaylogo": False})
