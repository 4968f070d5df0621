"""
``python -m digitalspring`` is the ``dspring`` command.
"""

import sys

from .cli import main

sys.exit(main())
