"""``python -m ambry.cli``: the ``ambry`` command without an installed entry point."""

from ambry.cli.main import main

main()
