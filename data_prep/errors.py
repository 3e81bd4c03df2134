"""The error every reader of a corpus file raises for a clip that cannot be used."""


class BadClip(Exception):
    """A clip that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
