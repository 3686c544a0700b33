"""Errors a user can cause, reported by the CLI as one paragraph with exit code 2."""


class UserError(Exception):
    """A problem in the user's input (config, data file, arguments) with a fix to suggest.

    The CLI prints the message alone (no traceback) and exits with status 2. The message must
    name the problem and say what to change.
    """
