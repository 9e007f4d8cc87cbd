"""The one exception type users of the codec need to catch."""


class YotoError(ValueError):
    """Bad input to the codec: a corrupt, truncated or foreign bitstream, an unusable image or an out-of-range setting.

    The message is one line that names the problem, fit to show to a user as it is.
    """
