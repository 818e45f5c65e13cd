"""`python -m resrepro` runs the CLI (also the form torchrun needs: `torchrun -m resrepro ...`)."""

from resrepro.cli import main

main()
