"""The command line of `modeling.training.finalize`, whose docstring says what it does:
`python -m scripts.finalize --help`."""
from __future__ import annotations

from modeling.runtime.host import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime/host.py)

import argparse  # noqa: E402 - after the allocator is chosen
import sys
from pathlib import Path

from modeling.runtime.files import DEPLOYED_DIR, ModelLoadError
from modeling.training.data import DataLoadError
from modeling.training.finalize import add_arguments, add_xray_gate, finalize
import modeling.training.finalize as library


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", help="the imagefolder or Hub dataset id the run was trained on (required, except "
                                            "with --add-xray-gate)")
    parser.add_argument("--add-xray-gate", type=Path, metavar="GATE_DIR", help="only put this chest X-ray gate "
                        "into the finalized folder RUN_DIR, leaving the rest as it is")
    parser.add_argument("--output-dir", type=Path,
                        help=f"where to write the deployable folder (default: RUN_DIR/{DEPLOYED_DIR})")
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.add_xray_gate:
            return add_xray_gate(args.run_dir, args.add_xray_gate)
        if not args.data:
            sys.exit("finalize needs --data: the imagefolder or Hub dataset id the run was trained on")
        finalize(args.run_dir, args.data, args.output_dir, precision=args.precision, tta=args.tta,
                 threshold_rule=args.threshold_rule, target_sensitivity=args.target_sensitivity,
                 weights_dtype=args.weights_dtype, ood_quantile=args.ood_quantile, ood_gate=args.ood_gate,
                 int8_images=args.int8_images, xray_gate=args.xray_gate,
                 command=" ".join(["python -m scripts.finalize", *(argv if argv is not None else sys.argv[1:])]))
    except (ModelLoadError, DataLoadError) as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
