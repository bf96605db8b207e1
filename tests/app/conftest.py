"""Each AppTest test starts with no model loaded: st.cache_resource lives as long as the process."""

import pytest

from explorer import session, tasks


@pytest.fixture(autouse=True)
def fresh_registry():
    session.registry.clear()
    session.store.clear()  # captures kept for every session
    tasks.forget_heads()  # the Tasks page's head models, kept beside the registry
    yield
    session.registry.clear()
    tasks.forget_heads()
