"""``python -m yotocodec`` is the same as the ``yotocodec`` command."""

from .cli import main

main()
