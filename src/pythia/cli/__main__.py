"""`python -m pythia.cli ...` (what torchrun runs: `torchrun ... -m pythia.cli analyze RUN NAME`)."""
import sys

from . import main

sys.exit(main())
