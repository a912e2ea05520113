"""User-facing errors.

Every problem a user can cause (a corrupt file, a wrong shape, an unreachable
Hub repo) is raised as :class:`LVSegError` with a one-line message; the command
line and the app print that line and never a traceback.
"""


class LVSegError(Exception):
    """An error caused by the user's input, with a one-line message."""


class ScanReadError(LVSegError):
    """A scan or label file that cannot be read or has the wrong shape."""


class WeightsError(LVSegError):
    """Model weights that cannot be found, fetched or loaded."""


class SeriesChoiceError(ScanReadError):
    """Several DICOM series could be meant: ``series`` lists them, each a dict
    with ``series_uid``, ``description`` and ``n_images``; read one by its UID."""

    def __init__(self, message: str, series: list[dict]) -> None:
        super().__init__(message)
        self.series = series


def one_line(message: object, limit: int | None = None) -> str:
    """``message`` (an exception or a text) on one line, runs of whitespace collapsed.

    An exception without text gives its type name; with ``limit``, a longer
    text is cut to ``limit`` characters ending in ``...``.
    """
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
