"""``python -m axolotl_decselfmask.cli COMMAND ...``: the same commands, for launchers that start a module."""

from axolotl_decselfmask.cli import decselfmask

if __name__ == "__main__":
    decselfmask(prog_name="decselfmask")
