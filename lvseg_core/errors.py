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
