"""The one exception type for problems a user can fix.

Its message is a single line that names the file, key or experiment at fault; the CLI
prints it and exits non-zero. Anything else that escapes is a bug and keeps its traceback.
"""


class MonkeyReportError(Exception):
    """A user-fixable problem, described in one line."""


class ConfigError(MonkeyReportError):
    """The config file or a command-line override is invalid."""


class DataError(MonkeyReportError):
    """The dataset cannot be found or used."""
