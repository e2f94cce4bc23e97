"""The one project exception type. Raise it at boundaries (files, configs, messages) with a message that
names the file, record or key and what is wrong; the CLI prints it as one line and exits non-zero."""


class FedECGError(Exception):
    """A user-facing error: bad input, bad config, a corrupt file, a refused message."""


class SiteRefusal(FedECGError):
    """A site declines a round for a reason it may state publicly (e.g. too few valid training records).

    ``public`` is a fixed sentence with counts only (no record contents, ids or paths): the site's egress guard
    (client.egress) turns the refusal into a normal ``refused`` reply carrying the site's name, ``public`` and the
    allow-listed ``metrics``; ``str(exc)`` (the details) stays in the site's local log."""

    def __init__(self, details: str, *, site: str, public: str, metrics: dict[str, float] | None = None) -> None:
        super().__init__(details)
        self.site = site
        self.public = public
        self.metrics = dict(metrics or {})
