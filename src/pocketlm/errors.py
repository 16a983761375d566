"""One exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad file, bad config, bad flag), not a bug."""
