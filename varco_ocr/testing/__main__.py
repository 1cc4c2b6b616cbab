"""`python -m varco_ocr.testing tiny-model OUT_DIR`: write a tiny random-weight VARCO-like model;
`python -m varco_ocr.testing taught-model OUT_DIR --samples samples`: one taught to read the samples."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varco_ocr.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight model folder (no network)")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden", type=int, default=32)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--ordinary-tags", action="store_true",
                      help="task tags as ordinary added tokens (they survive servers that strip special tokens)")
    taught = sub.add_parser("taught-model", help="write a tiny model taught to read the first words of the samples (a minute of CPU)")
    taught.add_argument("out_dir")
    taught.add_argument("--samples", default="samples", help="folder with the samples and their .words.json (default: samples)")
    args = parser.parse_args(argv)
    from varco_ocr.testing.tiny_model import write_taught_model, write_tiny_model

    if args.command == "taught-model":
        print(write_taught_model(args.out_dir, args.samples))
        return 0
    out = write_tiny_model(args.out_dir, seed=args.seed, hidden=args.hidden, layers=args.layers, ordinary_tags=args.ordinary_tags)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
