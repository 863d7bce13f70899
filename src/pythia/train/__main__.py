"""`python -m pythia.train SPEC.yaml [--out DIR] [--dry-run]`: the `pythia train` command as a
module, so torchrun can launch it: `torchrun --nproc-per-node N -m pythia.train SPEC.yaml`."""
from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
