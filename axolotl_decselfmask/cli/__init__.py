"""The plugin's commands: ``axolotl decselfmask COMMAND ...`` or ``decselfmask COMMAND ...``.

Axolotl 0.19 serves the click group :data:`decselfmask` through the ``axolotl.cli_commands``
entry point (``axolotl/cli/plugins.py``), and the ``decselfmask`` console script runs the same
group. Axolotl imports this module to render ``axolotl --help``, so it imports click and the
standard library only: no torch, transformers or Axolotl. Each command imports its tool when it
runs and hands it the rest of the command line, so every tool keeps its own ``--help``.
"""

from __future__ import annotations

import click

from axolotl_decselfmask.cli.commands import COMMANDS, Command, MissingExtra, run

__all__ = ["COMMANDS", "Command", "MissingExtra", "decselfmask", "run"]

FORWARD = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.group(name="decselfmask", short_help="DecSelfMask: predict, inspect, precompute, quickstart, ...")
def decselfmask() -> None:
    """DecSelfMask's commands: label notes with a trained run, look at the masks, set up the quickstart.

    Each command has its own --help: axolotl decselfmask COMMAND --help.
    """


def _add(spec: Command) -> None:
    """One click command that hands its arguments, untouched, to the tool's ``main(argv)``."""

    @decselfmask.command(name=spec.name, help=spec.help, short_help=spec.help, context_settings=FORWARD,
                         add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        try:
            code = run(spec.name, list(args))
        except MissingExtra as exc:
            raise click.ClickException(str(exc)) from None
        if code:
            raise SystemExit(code)


for _spec in COMMANDS.values():
    _add(_spec)
