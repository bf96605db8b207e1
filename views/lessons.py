"""Lessons: a course through the transformer on the loaded model and the workspace's text, one lesson at a
time, each with a question the model answers; a presentation mode for a projector."""

import zlib

import streamlit as st

from explorer import session
from explorer.errors import InputError, LoadError
from explorer.lessons import course, glossary, reading
from explorer.lessons.questions import CHOICE, MANY, parse_number
from explorer.models import zoo
from explorer.models.anatomy import UnsupportedModel
from explorer.models.loading import LoadRequest
from explorer.web.display import md
from views.common import chips, kept, model_or_stop, share, shared_text, workspace_text

LESSON, PRESENT, SCREEN = session.LESSON, session.PRESENT, session.LESSON_SCREEN
BUILT = "lesson_built"  # ((request, text), {lesson id: Live | error message}) of this user's lessons
FAMILIES = "lesson_families"  # the three families' maps were asked for
VERDICTS = "lesson_verdicts"  # answer box key -> (what was given, right)
REVEALED = "lesson_revealed"  # answer box keys whose answer was shown
SCREENS = ("The idea", "On this model", "Question")
IDS = [lesson.id for lesson in course.LESSONS]

PRESENTATION_CSS = """<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"]
  {display:none}
[data-testid="stMainBlockContainer"] {max-width: 1400px; padding-top: 1.5rem}
[data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li,
[data-testid="stMainBlockContainer"] label {font-size: 1.55rem !important; line-height: 1.5}
[data-testid="stMainBlockContainer"] h1 {font-size: 3rem}
</style>"""


def _move(step: int) -> None:
    """Next (+1) or previous (-1): in presentation mode through the screens, else through the lessons."""
    i = IDS.index(st.session_state[LESSON])
    if st.session_state.get(PRESENT):
        screen = st.session_state.get(SCREEN, 0) + step
        if 0 <= screen < len(SCREENS):
            st.session_state[SCREEN] = screen
            return
        if 0 <= i + step < len(IDS):
            st.session_state[LESSON] = IDS[i + step]
            st.session_state[SCREEN] = 0 if step > 0 else len(SCREENS) - 1
        return
    if 0 <= i + step < len(IDS):
        st.session_state[LESSON] = IDS[i + step]


def _idea(lesson: course.Lesson) -> None:
    for sentence in lesson.idea:
        st.markdown(glossary.gloss(sentence), unsafe_allow_html=True)  # the project's own text, marks escaped


def _live(loaded, text: str, lesson: course.Lesson):
    """The lesson's view of this model and text, built once per user and kept (every lesson of one
    model and text: going back to one runs nothing)."""
    seen, built = st.session_state.get(BUILT, ((), {}))
    if seen != (loaded.request, text):
        seen, built = (loaded.request, text), {}
        st.session_state[BUILT] = seen, built
    if lesson.id not in built:
        cap = session.capture_for(loaded, text, None)
        if cap is None:  # the message is on the page
            st.stop()
        spinner = f"Working out “{lesson.title}” on {md(loaded.card.name)} …"
        try:
            with session.model_turn(loaded, "a lesson"), st.spinner(spinner):
                built[lesson.id] = lesson.build(loaded, text, cap)
        except (InputError, UnsupportedModel) as err:
            built[lesson.id] = str(err)
    if isinstance(built[lesson.id], str):
        st.warning(md(built[lesson.id]))
        st.stop()
    return built[lesson.id]


def _show_model(loaded, text: str, live, lesson: course.Lesson) -> None:
    for fact in live.facts:
        st.markdown(fact)
    if live.tokens is not None:
        st.html(f'<div style="line-height:2">{chips(live.tokens)}</div>')
    if live.latex:
        st.latex(live.latex)
    if live.table is not None:
        st.dataframe(live.table, hide_index=True)
    for i, fig in enumerate(live.figures):
        st.plotly_chart(fig, key=f"lesson-{lesson.id}-{i}")
    for note in live.notes:
        st.caption(note)
    for name in live.offers:
        st.button(f"Compare: load {zoo.ZOO[name].title}", key=f"offer-{lesson.id}-{name}",
                  on_click=session.switch_to, args=(name,))  # fmt: skip
    if lesson.id == "masks":
        _families(loaded, text)


def _families(loaded, text: str) -> None:
    """The three embedded families' maps side by side, once asked for (it loads the three models on this
    server): each reads the workspace's text, the date normalizer a date."""
    if not st.session_state.get(FAMILIES) and not st.button("Side by side: an encoder, a decoder and an "
                                                            "encoder-decoder (loads the three)"):  # fmt: skip
        return
    st.session_state[FAMILIES] = True
    figures = []
    for name in reading.FAMILIES:
        request = LoadRequest("embedded", name, loaded.request.device, loaded.request.dtype)
        try:
            other = session.fetch(request)
        except LoadError as err:
            st.warning(md(err))
            continue
        own = zoo.ZOO[name].example  # the date normalizer reads only dates: its own, unless it is loaded
        read = own if own and request != loaded.request else text
        cap = session.capture_for(other, read, None)
        if cap is not None:
            figures += reading.family_maps(cap, name)
    for i, (col, fig) in enumerate(zip(st.columns(max(len(figures), 1)), figures)):
        with col:
            st.plotly_chart(fig, key=f"lesson-family-{i}")


def _question(live, lesson: course.Lesson) -> None:
    q = live.question
    box = f"answer-{lesson.id}-{zlib.crc32(q.prompt.encode()):08x}"  # a new question gets a fresh box
    st.markdown(f"**Question.** {q.prompt}")
    with st.form(f"form-{box}", border=False):
        if q.kind == CHOICE:
            short = len(q.options) > 6 and max(len(o) for o in q.options) <= 24
            given = st.radio("Your answer", q.options, index=None, key=box, format_func=md, horizontal=short)
        elif q.kind == MANY:
            given = st.pills("Your answer", q.options, selection_mode="multi", key=box, format_func=md)
        else:
            given = st.text_input(f"Your answer{f' ({q.unit})' if q.unit else ''}", key=box,
                                  placeholder="a number")  # fmt: skip
        if st.form_submit_button("Check"):
            if q.kind not in (CHOICE, MANY) and parse_number(given) is None:
                st.session_state.setdefault(VERDICTS, {})[box] = (given, None)
            else:
                st.session_state.setdefault(VERDICTS, {})[box] = (given, q.check(given))
    verdict = st.session_state.get(VERDICTS, {}).get(box)
    if verdict is not None:
        given, right = verdict
        if right is None:
            st.warning(f"“{md(given)}” is not a number. Type digits, e.g. 0.25 or 1,234.")
        elif right:
            st.success(f"Right. {q.why}")
        else:
            st.error("Not quite. Look at the figures again, or ask for the answer below.")
    if st.button("Show the answer", key=f"reveal-{box}"):
        st.session_state.setdefault(REVEALED, set()).add(box)
    if box in st.session_state.get(REVEALED, set()):
        st.info(f"**Answer:** {md(q.answer_text())}\n\n{q.why}")


def _absent(reason: str, lesson: course.Lesson) -> None:
    st.info(md(reason))
    entry = zoo.ZOO.get(lesson.instead or "")
    if entry is not None:
        st.button(f"Load {entry.title} for this lesson", type="primary", on_click=session.switch_to,
                  args=(entry.name,))  # fmt: skip


def _navigation(present: bool, where: str) -> None:
    left, middle, right = st.columns([1, 3, 1])
    left.button("← Previous", on_click=_move, args=(-1,), shortcut="Left", width="stretch")
    middle.caption(where)
    right.button("Next →", on_click=_move, args=(1,), shortcut="Right", width="stretch")


loaded = model_or_stop()
kept("selectbox", "Lesson", LESSON, IDS[0], st.sidebar, options=IDS,
     format_func=lambda i: f"{IDS.index(i) + 1}. {course.BY_ID[i].title}")  # fmt: skip
present = kept("toggle", "Presentation mode", PRESENT, False, st.sidebar,
               help="For a projector: larger type, one idea per screen, no sidebar. Arrow keys go to the "
               "next and previous screen.")  # fmt: skip
st.session_state.setdefault(SCREEN, 0)
lesson = course.BY_ID[st.session_state[LESSON]]
number = IDS.index(lesson.id) + 1

if present:
    st.markdown(PRESENTATION_CSS, unsafe_allow_html=True)
st.markdown(glossary.GLOSS_STYLE, unsafe_allow_html=True)
st.title(f"{number}. {lesson.title}")
if not present:
    text = shared_text(loaded, height=68)
else:
    text = workspace_text(loaded)
    st.caption(f"{md(loaded.card.name)} · “{md(text)}”")
share(LESSON, PRESENT, SCREEN, session.TEXT)  # a teacher's link opens the class on this lesson and screen

reason = course.absent(lesson, loaded)
screen = st.session_state[SCREEN] if present else None
where = f"Lesson {number} of {len(IDS)}" + (f" · {SCREENS[screen]} ({screen + 1}/3)" if present else "")
# The arrows get their own place in the page, drawn before the lesson. Below a verdict or an answer that
# appears, they would move down one place while the page redraws; Streamlit then unmounts the old ones, and
# an arrow key pressed in that moment (the class has just seen "Right.") was lost.
body, foot = st.container(), st.container()
with foot:
    _navigation(present, where)
    if present:
        if st.button("Leave presentation mode"):
            st.session_state[PRESENT] = False
            st.rerun()
    else:
        with st.expander("Glossary: the words this app uses"):
            for term, meaning in glossary.TERMS.items():
                st.markdown(f"**{md(term)}**: {md(meaning)}")
with body:
    if screen in (None, 0):
        _idea(lesson)
    if reason is not None and screen in (None, 1, 2):
        _absent(reason, lesson)
    elif screen in (None, 1, 2):
        live = _live(loaded, text, lesson)
        if screen in (None, 1):
            if screen is None:
                st.subheader(f"On {loaded.card.name}")
            _show_model(loaded, text, live, lesson)
        if screen in (None, 2):
            _question(live, lesson)
