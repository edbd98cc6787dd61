"""The `parley` command."""

import click


@click.group()
def main() -> None:
    """Parley: a durable runtime for AI agents that talk to people."""
