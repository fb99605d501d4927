"""The one exception type for mistakes a user can fix.

`UserError` carries a message that names the problem and what to do about it. The CLI prints it
without a traceback and exits with status 2; everything else (internal invariants) is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: a file, a flag, a config value. The message says the fix."""
