"""Lets ``python -m kliv`` behave exactly like the ``kliv`` console script."""

from kliv.cli import main

main()
