"""The command line of `modeling.gate_training.non_xray`, whose docstring says what it does:
`python -m scripts.non_xray --help`."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from modeling.gate_training.non_xray import assemble
import modeling.gate_training.non_xray as library


def main() -> None:
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    paths = assemble(parser.parse_args().out_dir)
    groups: dict[str, int] = {}
    for path in paths:
        group = path.stem.split("-")[0] + ("-grey" if path.stem.endswith("-grey") else "")
        groups[group] = groups.get(group, 0) + 1
    print(f"{len(paths)} images in {os.fspath(paths[0].parent)}: {groups}")


if __name__ == "__main__":
    main()
