"""Typed exceptions. Every refusal of bad input raises a subclass of :class:`StrokescanError`.

The CLI turns any of them into one line on stderr and exit status 2; later interfaces (web, listener)
map them to a 4xx answer. Messages name the file and what was wrong with it, never patient data.
"""


class StrokescanError(Exception):
    """Base class of every error strokescan raises on purpose."""


class InputError(StrokescanError):
    """The input cannot be analysed."""


class PathNotFoundError(InputError):
    """The path does not exist."""


class EmptyInputError(InputError):
    """A zero-byte file, or a folder or archive with nothing readable in it."""


class UnsupportedFormatError(InputError):
    """A file that is none of the formats strokescan reads (JPEG/PNG, DICOM, NIfTI, a .zip of DICOM)."""


class UnreadableFileError(InputError):
    """A file of a supported format that cannot be decoded (corrupt, truncated, unknown compression)."""


class InputTooLargeError(InputError):
    """A file, archive or image larger than the configured limits."""


class NoPixelDataError(InputError):
    """A DICOM object without an image (a report, a structured document, a presentation state)."""


class InconsistentSeriesError(InputError):
    """The slices of one series do not form one volume (different sizes, no way to order them)."""


class MultipleSeriesError(InputError):
    """A folder or archive holds several series and none was chosen."""

    def __init__(self, message: str, series: list[dict]) -> None:
        super().__init__(message)
        self.series = series


class OutOfScopeError(InputError):
    """A readable scan the models were not made for (not CT, not the head, a localizer, not axial...).

    ``reason`` is the one-line why, as :func:`strokescan.io.scope.scope_problem` gives it.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class DataError(StrokescanError):
    """A dataset folder is missing or does not have the layout its adapter expects."""


class ModelError(StrokescanError):
    """A model file is missing, corrupt (checksum mismatch) or does not match its plan."""


class OutputError(StrokescanError):
    """An output (mask, overlay, report) could not be written where asked."""
