"""Each AppTest test starts with no model loaded: st.cache_resource lives as long as the process."""

import functools

import pytest
from streamlit.components.v2 import manifest_scanner
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import app_test

from explorer import session, tasks
from explorer.runs import saved


@pytest.fixture(autouse=True, scope="session")
def one_server_setup():
    """What a Streamlit server does once per process, AppTest does per test or per run: it scans every
    installed package for components (0.36 s, at each AppTest's first run) and compiles the app's scripts
    again (a new script cache at every run, with Streamlit's "magic" rewriting each script's syntax
    tree). Here, as in a server, the scan is made once and the compiled scripts are kept: neither the
    installed packages nor the scripts change during a test run."""
    shared = ScriptCache()
    with pytest.MonkeyPatch.context() as patch:
        scan = functools.cache(manifest_scanner.scan_component_manifests)
        patch.setattr(manifest_scanner, "scan_component_manifests", scan)
        patch.setattr(app_test, "ScriptCache", lambda: shared)
        yield


@pytest.fixture(autouse=True)
def fresh_registry(request, monkeypatch):
    """No model loaded, no capture kept; and no saved first view (explorer.runs.saved), except for the
    tests marked first_view: the others look at pages drawn on the model itself."""
    if request.node.get_closest_marker("first_view") is None:
        monkeypatch.setattr(saved, "find", lambda *args, **kwargs: None)
    session.registry.clear()
    session.store.clear()  # captures kept for every session
    tasks.forget_heads()  # the Tasks page's head models, kept beside the registry
    yield
    session.registry.clear()
    tasks.forget_heads()
