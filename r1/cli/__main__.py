"""`python -m r1.cli` (what the tests and `torchrun -m r1.cli` run)."""
from r1.cli import main

main()
