"""What the pages share: values kept across page visits, the text boxes, the token line, the capture."""

from html import escape
from urllib.parse import urlencode

import streamlit as st

from explorer import session
from explorer.models import zoo
from explorer.models.anatomy import UnsupportedModel
from explorer.models.zoo import DEFAULT_TEXT
from explorer.runs.capture import Capture, Sequence
from explorer.runs.saved import SavedView
from explorer.serving import links
from explorer.web.display import md

LONG = 120  # tokens: more go in an expander


NO_MODEL = "No model is loaded. Pick one in the sidebar and press Load."


def no_model(message: str = NO_MODEL) -> None:
    """Says on the page that this user has no model: why, when their last load failed (the sidebar says it
    too, but below the fold of a laptop's screen), then `message`."""
    error = st.session_state.get(session.LOAD_ERROR)
    if error:
        st.error(md(error))
    st.info(message)


def model_or_stop(message: str = NO_MODEL):
    """This user's model; without one, `no_model(message)` and the page stops there."""
    loaded = session.current_model()
    if loaded is None:
        no_model(message)
        st.stop()
    return loaded


def or_stop(compute, *args):
    """`compute(*args)`; for a model these pages do not take apart (UnsupportedModel), its sentence as a
    warning, and the page stops there."""
    try:
        return compute(*args)
    except UnsupportedModel as err:
        st.warning(md(err))
        st.stop()


def kept(widget: str, label: str, key: str, default, container=st, box: str | None = None, **kwargs):
    """A widget (`st.<widget>`) whose value lives under `key`, outside the widget, so that it survives a
    visit to another page (Streamlit drops the state of widgets a page run did not draw). The widget
    itself is keyed `box` (default `<key>_box`); code that sets `st.session_state[key]` moves the widget
    too. Pass no `value` or `index`: the value comes from `key` (`default` the first time)."""
    st.session_state.setdefault(key, default)
    if "options" in kwargs:  # what was chosen under another model or text may not be on offer now
        choice(key, kwargs["options"], default, many=widget == "multiselect")
    box = box or f"{key}_box"
    st.session_state[box] = st.session_state[key]

    def keep() -> None:
        st.session_state[key] = st.session_state[box]

    return getattr(container, widget)(label, key=box, on_change=keep, **kwargs)


def choice(key: str, options, default, many: bool = False):
    """The value under `key`, made one of `options` (for `many`, the chosen ones still offered); else
    `default`. After a model switch Streamlit can even hand back an old label as a string."""
    options = list(options)
    value = st.session_state.get(key, default)
    if many:
        value = [v for v in value if v in options] if isinstance(value, list) else list(default)
    elif value not in options:
        if session.from_link(key):
            label = next((p.label for p in session.LINK if p.key == key), key)
            st.warning(
                f"The link's {label} {md(str(value))} is not one this model offers here; showing "
                f"{md(str(default))} instead."
            )
        value = default
    session.checked(key)
    st.session_state[key] = value
    return value


def _kept_box(label: str, key: str, default: str, height: int, container=st) -> str:
    return kept("text_area", label, key, default, container, height=height)


def default_text(loaded) -> str:
    """The workspace's first text for `loaded` (explorer.models.zoo.default_text); a saved first view
    (explorer.runs.saved) carries its own."""
    return loaded.text if isinstance(loaded, SavedView) else zoo.default_text(loaded)


def _follow_model(loaded) -> None:
    """A text the user has not written (the example the workspace was given for another model) becomes
    this model's example."""
    given = st.session_state.get(session.TEXT_GIVEN)
    examples = {DEFAULT_TEXT, given} | {e.example for e in zoo.ZOO.values() if e.example}
    if st.session_state.get(session.TEXT) in examples:
        st.session_state[session.TEXT] = default_text(loaded)
    if session.TEXT not in st.session_state:
        st.session_state[session.TEXT] = default_text(loaded)
    st.session_state[session.TEXT_GIVEN] = default_text(loaded)


def focus_position(loaded, tokens, default: int) -> None:
    """The focused position (session.FOCUS), shared by the pages that read the same sequence: kept while
    the model and the tokens are the ones it was chosen on, else set to `default` (a link's own position
    is kept, and checked by the page's widget)."""
    seen = (loaded.request, tuple(tokens))
    if st.session_state.get(session.FOCUS_FOR) != seen:
        st.session_state[session.FOCUS_FOR] = seen
        if not session.from_link(session.FOCUS):
            st.session_state[session.FOCUS] = default


def shared_text(loaded, height: int = 90) -> str:
    """The workspace's text (an encoder-decoder's source) in one box, for the pages that read one text: the
    same text as on the Attention page, carried from page to page."""
    _follow_model(loaded)
    label = "Source (the encoder's input)" if loaded.card.family == "encoder-decoder" else "Text"
    return _kept_box(label, session.TEXT, default_text(loaded), height)


def workspace_text(loaded) -> str:
    """The workspace's text without a box (a page that only shows it, as the Lessons' presentation)."""
    _follow_model(loaded)
    return st.session_state[session.TEXT]


def text_inputs(loaded) -> tuple[str, str | None]:
    """The workspace's text box(es) with the decoder's prefix for encoder-decoders (Attention, Hidden
    states, Flow); the pages that read one text use `shared_text`."""
    _follow_model(loaded)
    family = loaded.card.family
    if family == "encoder-decoder":
        left, right = st.columns(2)
        text = _kept_box("Source (the encoder's input)", session.TEXT, default_text(loaded), 90, left)
        target = _kept_box(
            "Target prefix (the decoder's input; empty: the model's own greedy output)",
            session.TARGET,
            "",
            90,
            right,
        )
        return text, target
    return _kept_box("Text", session.TEXT, default_text(loaded), 90), None


CHIP = (
    "display:inline-block; margin:1px 2px; padding:0 4px; border-radius:4px; font-family:monospace; "
    "font-size:12px; white-space:pre; background:{bg}"
)


def chips(seq: Sequence) -> str:
    """The tokens as escaped HTML chips; special tokens in another colour."""
    return "".join(
        f'<span title="id {i}" style="{CHIP.format(bg="#fde68a" if sp else "#e2e8f0")}">{escape(t)}</span>'
        for i, t, sp in zip(seq.ids, seq.tokens, seq.special)
    )


def token_line(cap: Capture) -> None:
    """The tokens the model read (special tokens in yellow)."""
    if cap.source is not None:
        how = "the model's own greedy output" if cap.target_generated else "your prefix"
        parts = [(f"Encoder input, {len(cap.source)} tokens", cap.source),
                 (f"Decoder input ({how}), {len(cap.sequence)} tokens", cap.sequence)]  # fmt: skip
    else:
        parts = [(f"{len(cap.sequence)} tokens (special tokens in yellow)", cap.sequence)]
    html = "".join(
        f'<div style="font-size:13px; color:#475569; margin:2px 0">{escape(label)}: {chips(seq)}</div>'
        for label, seq in parts
    )
    total = sum(len(seq) for _, seq in parts)
    if total > LONG:  # a long text's chips would push the figures off the screen
        with st.expander(f"The {total} tokens the model read"):
            st.html(html)
    else:
        st.html(html)


def capture_page(what: str):
    """The start both capture pages share: the user's model, the text boxes, the run (kept per text),
    the token line. Returns (loaded, capture), or None when there is nothing to show yet. On a first visit
    while the default model loads, `loaded` is its saved first view (explorer.runs.saved) and the capture
    that view's; `session.live(loaded)` gives the model itself to work that needs it."""
    view = session.preview()
    loaded = view or session.current_model()
    if loaded is None:
        no_model(f"Load a model in the sidebar to look at its {what}.")
        return None
    text, target = text_inputs(loaded)
    if view is not None and text == view.text and not target:
        session.until_live(view)
        cap = view.capture
    else:
        loaded = session.live(loaded)
        cap = session.capture_for(loaded, text, target)
        if cap is None:
            return None
        if not target:
            session.keep_first_view(loaded, text, cap)
    token_line(cap)
    return loaded, cap


def share(*keys: str, **values) -> None:
    """Keeps this page's picture in its URL (the model and the values under `keys`), so that a copied
    link opens it for someone else; says when the text is too long to travel in a link."""
    params, left_out = session.write_link(keys, **values)
    if left_out:
        st.caption(
            f"The link in the address bar carries this page's model and choices but not the "
            f"{' or '.join(left_out)} (longer than {links.TEXT_LIMIT:,} characters)."
        )
    url = st.context.url  # this page's address as the browser sees it (None in tests without one)
    if url:
        with st.sidebar.expander("Link to this view"):
            st.code(f"{url}?{urlencode(params)}", language=None, wrap_lines=True)
            st.caption("Copy it (button at its top right) and send it: it opens this picture on this server.")
