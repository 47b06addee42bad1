"""`python -m nnassay.flows`: the nnassay command line."""

from nnassay.flows.cli.main import main

if __name__ == "__main__":
    main()
