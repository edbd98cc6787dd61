"""`python -m parley` is the `parley` command."""

from parley.stack.cli import main

main()
