"""The one error type for bad input a user can fix.

Raise `InputError` (or a subclass, like the config's `ConfigError`) with a message that names the file and line,
the key or the value at fault. The `tfm` CLI prints it as one line and exits with status 2; library callers can
catch it as a `ValueError`.
"""


class InputError(ValueError):
    """Bad input the user can fix: a file, line, key or value named in the message.

    Example:
    >>> str(InputError("data.txt:3: empty line"))
    'data.txt:3: empty line'
    """
