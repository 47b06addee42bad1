"""The `nnassay` entry point (`python -m flows`).

`nnassay verify` goes straight to the verifier's own small argument parser: its timeout covers the
whole process, so it skips the CLI framework (typer and rich: 0.07 s of 0.30 s for `--help` here). Every other command
goes to the typer application in ``flows.cli``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Dispatch `verify` to ``tasks.formal.command``, everything else to ``flows.cli``."""
    if sys.argv[1:2] == ["verify"]:
        from tasks.formal.command import main as verify_main

        sys.exit(verify_main(sys.argv[2:]))
    from flows.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
