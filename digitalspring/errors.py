"""
The root of every error Digital Spring raises on purpose.

Each layer defines its own subclasses next to its code; the docstring of each
subclass is the sentence a user reads when it happens.
"""


class DigitalSpringError(Exception):
    """
    Something in Digital Spring went wrong.
    """
