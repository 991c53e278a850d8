"""User-facing errors.

Everything that is the caller's fault (a missing file, an unknown model name, a width that does not divide into
groups) raises a subclass of :class:`LightnnError`. The CLI prints these as one line, never as a traceback.
``LightnnError`` subclasses ``ValueError`` so library users can catch either.
"""


class LightnnError(ValueError):
    """A problem with the caller's input, reported with the input's name and what is wrong."""


class UnknownModelError(LightnnError, KeyError):
    """An unknown registry name."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class DataError(LightnnError):
    """A dataset path, image file or cache that cannot be used."""


class CheckpointError(LightnnError):
    """A checkpoint or compressed-model file that cannot be read."""


class UnsupportedOpError(LightnnError):
    """An op the profiler, pruner or exporter cannot handle; the message names the op and the layer."""


class OutputError(LightnnError, OSError):
    """An output that cannot be written (disk full, read-only folder, no permission): names the path and the
    operating system's reason. Also an ``OSError``, so code that tolerates failed writes keeps catching it."""

    def __init__(self, path: object, err: OSError) -> None:
        super().__init__(err.errno, err.strerror)
        self.errno, self.strerror, self.filename = err.errno, err.strerror, str(path)
        self.message = f"cannot write {str(path)!r}: {err.strerror or err}"

    def __str__(self) -> str:
        return self.message


class LnzError(CheckpointError):
    """A ``.lnz`` (Deep Compression) file that cannot be decoded; the subclasses say why."""


class LnzCorruptError(LnzError):
    """Damage: wrong magic bytes, a checksum mismatch, a truncated or over-long file."""


class LnzFormatError(LnzError):
    """Intact bytes that do not form a valid file: an unknown version or flag, inconsistent fields or segments."""


class LnzLimitError(LnzError):
    """A size in the file beyond what the file or the model it describes can hold (refused before allocating)."""
