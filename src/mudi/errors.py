"""The one exception type users see: a message that says what was wrong and how to fix it."""


class MudiError(Exception):
    """Bad input or environment. The CLI prints ``str(error)`` on one line and exits non-zero.

    Raise it with a message naming the file or value at fault and the fix, e.g.
    ``MudiError("mask masks/a00.png is 512x512 but its image a00.jpg is 640x480: re-export the mask")``.
    """
