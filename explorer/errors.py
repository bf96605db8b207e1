"""The one error type a user sees: a message that says what is wrong and what to do."""


class LoadError(Exception):
    """A model could not be loaded; `str(err)` is a complete sentence fit for the page."""
