"""The one project exception type. Raise it at boundaries (files, configs, messages) with a message that
names the file, record or key and what is wrong; the CLI prints it as one line and exits non-zero."""


class FedECGError(Exception):
    """A user-facing error: bad input, bad config, a corrupt file, a refused message."""
