"""The CLI's two failure kinds, in their own module so every ``roost.cli`` file raises the same classes.

(``python -m roost.cli.main`` runs main.py as ``__main__``: classes defined there would be distinct
from the ``roost.cli.main`` ones other files import.)
"""


class UsageError(Exception):
    """Bad arguments or input: exit code 2."""


class OperationFailed(Exception):
    """The command was understood but could not be done: exit code 1."""
