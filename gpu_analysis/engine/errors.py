"""The one exception type whose message is shown to users as-is (`error: <message>`, exit 2)."""


class UserError(Exception):
    """Bad input or settings. The message names the problem and, where useful, what to do."""
