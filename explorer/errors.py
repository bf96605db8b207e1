"""The one error type a user sees: a message that says what is wrong and what to do."""


class LoadError(Exception):
    """A model could not be loaded; `str(err)` is a complete sentence fit for the page."""


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line messages."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


class InputError(ValueError):
    """The user's input cannot be run (empty, too long, too large); `str(err)` says what to change."""
