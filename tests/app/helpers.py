"""What the AppTest tests share: the app, a run that fails on any exception, charts, loading a folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from explorer import session

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def app(timeout: float = 120) -> AppTest:
    return run(AppTest.from_file(APP, default_timeout=timeout))


def charts(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def numbers(x) -> list:
    """Plotly sends numeric arrays as base64 typed arrays ({"dtype", "bdata"}) or as lists."""
    if isinstance(x, dict):
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return list(x)


def load_folder(at: AppTest, folder) -> None:
    at.radio(key=session.SOURCE).set_value("folder")
    run(at)
    at.text_input(key=session.FOLDER).set_value(str(folder))
    at.sidebar.button[0].click()
    run(at)
