"""The ``ambry`` command line (``ambry.cli.main:main``). Nothing imports this package."""
