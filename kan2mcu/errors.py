"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class Kan2mcuError(Exception):
    """Base class of every error kan2mcu reports to its user."""


class CheckpointError(Kan2mcuError):
    """A checkpoint is missing, unreadable, foreign or holds invalid values."""


class UnsupportedModelError(Kan2mcuError):
    """The model uses a feature kan2mcu cannot deploy (names the layer and the feature)."""


class OptionError(Kan2mcuError):
    """A user option is out of range or unknown."""


class QuantizationError(Kan2mcuError):
    """Quantization cannot meet its guarantees (e.g. a possible accumulator overflow)."""


class ToolchainError(Kan2mcuError):
    """A compiler, emulator or build tool is missing or failed."""


class BoardError(Kan2mcuError):
    """Unknown board, or the model does not fit the board."""


class VerificationError(Kan2mcuError):
    """Generated code disagrees with the reference."""
