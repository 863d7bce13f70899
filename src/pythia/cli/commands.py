"""What every `pythia` subcommand's parser has in common: examples in the epilog, as written."""
from __future__ import annotations

import argparse

FMT = argparse.RawDescriptionHelpFormatter


def add_command(sub, name: str, help_: str, description: str, examples: str, func) -> argparse.ArgumentParser:
    """A subcommand `name` under `sub` running `func(args)`, its examples after the options."""
    p = sub.add_parser(name, help=help_, description=description, formatter_class=FMT,
                       epilog="examples:\n" + examples)
    p.set_defaults(func=func)
    return p
