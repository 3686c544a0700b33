"""Errors a user can cause, reported by the CLI as one paragraph with exit code 2."""


class UserError(Exception):
    """A problem in the user's input (config, data file, arguments) with a fix to suggest.

    The CLI prints the message alone (no traceback) and exits with status 2. The message must
    name the problem and say what to change.
    """


class RunInterrupted(Exception):
    """A signal stopped a run after it checkpointed; the CLI exits ``128 + signal``.

    Attributes:
        exit_code: 130 for SIGINT, 143 for SIGTERM (what job schedulers expect to requeue).
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
