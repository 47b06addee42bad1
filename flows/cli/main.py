"""The `nnassay` entry point (`python -m flows`).

`nnassay verify` goes straight to the verifier's own small argument parser: its timeout covers the
whole process, so it skips the CLI framework (typer and rich: 0.07 s of 0.30 s for `--help` here). Every other command
goes to the typer application in ``nnassay.flows.cli.app``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Dispatch `verify` to ``nnassay.tasks.methods.formal.command``, everything else to ``nnassay.flows.cli.app``."""
    if sys.argv[1:2] == ["verify"]:
        from nnassay.tasks.methods.formal.command import main as verify_main

        sys.exit(verify_main(sys.argv[2:]))
    from nnassay.flows.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
