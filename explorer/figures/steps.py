"""Pictures of generation: the next-token candidates before and after shaping, the text coloured by
the probability each token had, and the tree of undone branches. Pure functions."""

from __future__ import annotations

from html import escape
from typing import Sequence

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from explorer.runs.stepping import Branch, Candidate, Step
from explorer.web.display import plotly_text

RAW, SHAPED = "#94a3b8", "#2563eb"


def candidates_figure(cands: Sequence[Candidate], title: str, chosen: int | None = None) -> go.Figure:
    """Top candidates as horizontal bars: probability under the raw logits and after the settings."""
    labels = [
        f"{i + 1}. {plotly_text(c.token)}" + (" ◀" if c.token_id == chosen else "")
        for i, c in enumerate(cands)
    ]
    ids = [c.token_id for c in cands]
    fig = go.Figure(
        [
            go.Bar(
                y=labels, x=[c.prob for c in cands], orientation="h", name="raw logits", marker_color=RAW,
                customdata=ids, hovertemplate="%{y}<br>id %{customdata}<br>raw p %{x:.5f}<extra></extra>",
            ),
            go.Bar(
                y=labels, x=[c.prob_processed for c in cands], orientation="h", name="after your settings",
                marker_color=SHAPED, customdata=ids,
                hovertemplate="%{y}<br>id %{customdata}<br>shaped p %{x:.5f}<extra></extra>",
            ),
        ]
    )  # fmt: skip
    fig.update_layout(
        title=dict(text=plotly_text(title), font_size=15),
        barmode="group",
        yaxis=dict(autorange="reversed", type="category"),
        xaxis=dict(title="probability", range=[0, 1]),
        height=120 + 38 * len(cands),
        width=640,
        legend=dict(orientation="h", y=-0.12),
        margin=dict(l=10, r=10, t=50, b=40),
    )
    return fig


def prob_colour(p: float) -> str:
    """Low probability red, high green: the colour of a token chosen with probability p."""
    return sample_colorscale("RdYlGn", [max(0.0, min(1.0, p))])[0]


def sequence_html(
    prompt: Sequence[str], steps: Sequence[Step], joined: dict[int, tuple[int, str]] | None = None
) -> str:
    """The prompt in grey, then each generated token on the colour of the probability it had when it
    was chosen (raw logits); hover gives the numbers. `joined` (explorer.analyses.tokens.split_characters
    over prompt and steps together): tokens that hold the bytes of one character between them are shown
    as that character, once, in one chip naming them. Every token is escaped."""
    # each chip isolated for the bidirectional algorithm: right-to-left letters stay in token order
    chip = (
        "display:inline; padding:1px 1px; border-radius:3px; white-space:pre; font-family:monospace; "
        "unicode-bidi:isolate;"
    )

    def after(token: str) -> str:  # a line break after a newline token, else a place the line may wrap
        return "<br>" if token.endswith("↵") else "<wbr>"

    def tip(s: Step) -> str:
        return f"step {s.index + 1}: p={s.prob:.4f} (shaped {s.prob_processed:.4f}), rank {s.rank}, {s.how}"

    def style(s: Step) -> str:
        ink = "#ffffff" if s.prob < 0.2 or s.prob > 0.8 else "#111827"  # the scale's ends are dark
        return f"{chip} background:{prob_colour(s.prob)}; color:{ink}"

    n_prompt, joined = len(prompt), joined or {}
    parts, i = [], 0
    while i < n_prompt + len(steps):
        if i in joined:  # one character whose bytes several tokens hold
            end, text = joined[i]
            held = f"one character, its bytes in tokens {i} to {end - 1}"
            inside = [steps[j - n_prompt] for j in range(i, end) if j >= n_prompt]
            look = style(inside[0]) + "; outline:1px dashed #334155" if inside else f"{chip} color:#64748b"
            note = "; ".join([held, *(tip(s) for s in inside)])
            parts.append(f'<span title="{escape(note)}" style="{look}">{escape(text)}</span>{after(text)}')
            i = end
            continue
        if i < n_prompt:
            t = prompt[i]
            parts.append(f'<span style="{chip} color:#64748b">{escape(t)}</span>{after(t)}')
        else:
            s = steps[i - n_prompt]
            parts.append(
                f'<span title="{escape(tip(s))}" style="{style(s)}">{escape(s.token)}</span>{after(s.token)}'
            )
        i += 1
    return '<div style="line-height:1.9; font-size:14px; overflow-wrap:anywhere">' + "".join(parts) + "</div>"


def tree_figure(steps: Sequence[Step], branches: Sequence[Branch]) -> go.Figure:
    """The current continuation on the top row and every undone branch below it, each starting where its
    path leaves the current one (a branch undone under another prefix leaves it earlier than where it was
    undone). Tokens written on the nodes."""
    rows = [(0, steps, "current")]
    for i, b in enumerate(branches):
        fork = b.fork(steps)
        rows.append((fork, b.path[fork:], f"branch {i + 1}"))
    fig = go.Figure()
    for y, (start, seq, name) in enumerate(rows):
        xs = [start + i + 1 for i in range(len(seq))]
        fig.add_trace(
            go.Scatter(
                x=xs, y=[-y] * len(xs), mode="lines+markers+text", text=[plotly_text(s.token) for s in seq],
                textposition="top center", name=name, marker=dict(size=9),
                customdata=[[s.prob, s.rank, s.how] for s in seq],
                hovertemplate=f"{name}, step %{{x}}: %{{text}}<br>p %{{customdata[0]:.4f}}, rank "
                "%{customdata[1]}, %{customdata[2]}<extra></extra>",
            )
        )  # fmt: skip
        if y and start:
            fig.add_trace(
                go.Scatter(
                    x=[start, start + 1], y=[0, -y], mode="lines", line=dict(dash="dot", color="#94a3b8"),
                    showlegend=False, hoverinfo="skip",
                )
            )  # fmt: skip
    fig.update_layout(
        title=dict(text="Steps and the branches you undid", font_size=15),
        xaxis=dict(title="step", dtick=1),
        yaxis=dict(showticklabels=False, zeroline=False, range=[-len(rows) + 0.4, 0.8]),
        height=140 + 60 * len(rows),
        margin=dict(l=10, r=10, t=50, b=40),
    )
    return fig
