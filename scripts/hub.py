"""The command line of `modeling.hub`, whose docstring says what it does:
`python -m scripts.hub --help`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeling.hub import CARD_TEMPLATE, HubError, build_card, model_operations, space_operations, upload, write_card
import modeling.hub as library


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="write MODEL_DIR/README.md from model_card.md")
    push = commands.add_parser("push", help="upload a model folder (weights, config, card, plots) in one commit")
    for sub in (card, push):
        sub.add_argument("model_dir", type=Path)
        sub.add_argument("--repo-id", required=True)
        sub.add_argument("--card-template", type=Path, default=CARD_TEMPLATE,
                         help="the card to fill (default: the project's model_card.md)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="list the files and print the card, upload nothing")
    space = commands.add_parser("push-space", help="upload the Gradio demo as a Space")
    space.add_argument("--repo-id", required=True)
    space.add_argument("--model-repo", required=True, help="the model repo the Space loads")
    space.add_argument("--project-dir", type=Path, default=Path("."), help="the project to upload (default: here)")
    space.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            print(f"wrote {write_card(args.model_dir, args.repo_id, args.card_template)}")
        elif args.command == "push":
            card_text = str(build_card(args.model_dir, args.repo_id, args.card_template))
            operations = model_operations(args.model_dir, card_text)
            if args.dry_run:
                print(f"would upload to model repo {args.repo_id} in one commit:")
                print("\n".join(f"  {op.path_in_repo}" for op in operations))
                print("\n--- README.md (model card) ---\n" + card_text)
            else:
                print(upload(args.repo_id, "model", operations, "Upload pneumonia classifier", args.private))
        elif args.command == "push-space":
            operations = space_operations(args.project_dir, args.model_repo)
            if args.dry_run:
                print(f"would upload to Space {args.repo_id} (variable PNEUMONIA_MODEL={args.model_repo}):")
                print("\n".join(f"  {op.path_in_repo}" for op in operations))
            else:
                print(upload(args.repo_id, "space", operations, "Upload pneumonia demo",
                              space_variables={"PNEUMONIA_MODEL": args.model_repo}))
    except HubError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
