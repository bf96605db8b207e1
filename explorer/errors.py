"""The project's errors: one base, `ExplorerError`, whose message is a complete sentence fit for the page
or the command line; the pages and the CLI catch it. Subclasses say what went wrong."""


class ExplorerError(Exception):
    """Something the user can act on; `str(err)` says what is wrong and what to do."""


class LoadError(ExplorerError):
    """A model could not be loaded; `str(err)` is a complete sentence fit for the page."""


class InputError(ExplorerError, ValueError):
    """The user's input cannot be run (empty, too long, too large); `str(err)` says what to change."""


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line messages."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


class UnsupportedModel(InputError):
    """A part of this model could not be found, or the model does something these pages do not compute
    (`str(err)` names the part)."""
