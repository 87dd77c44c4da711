"""The typer application that every command module registers on."""

import typer

app = typer.Typer(
    name="deblur",
    help="Remove a known causal blur exactly, and learn the blur from examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
