"""`make checkpoints`: train and record every checkpoint the lessons load.

    python -m qlab.lab.tools.train --all    (= `make checkpoints`) trains all three from scratch, then --qat
    python -m qlab.lab.tools.train resnet   just one; writes data/checkpoints/ and METRICS.json
    python -m qlab.lab.tools.train --qat    lesson 05's QAT runs (its numbers.SWEEP) into data/checkpoints/qat

The fp32 recipes are in `qlab.lab.kit.train`; the QAT sweep is lesson 05's `record_sweep`."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from qlab.lab.kit import checkpoints, torch_ao
from qlab.lab.kit.train import train_and_save
from qlab.lab.lessons.l05_quantization_aware_training import numbers as l05_numbers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the lesson checkpoints from scratch (seeded).")
    parser.add_argument("names", nargs="*", help=f"models to train, of {', '.join(checkpoints.NAMES)}")
    parser.add_argument("--all", action="store_true", help="train every lesson model, then the QAT runs")
    parser.add_argument("--qat", action="store_true",
                        help="record lesson 05's QAT runs (data/checkpoints/qat), from the trained CNNs")
    parser.add_argument("--out", default=None, help="checkpoint folder (default data/checkpoints)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    args = parser.parse_args(argv)
    names = list(checkpoints.NAMES) if args.all else args.names
    if (not names and not args.qat) or set(names) - set(checkpoints.NAMES):
        parser.error(f"name models from {checkpoints.NAMES}, or pass --all or --qat")
    torch.set_num_threads(args.threads)
    for name in names:
        print(f"== {name}", flush=True)
        print(json.dumps(train_and_save(name, args.out, args.seed)), flush=True)
    if args.all or args.qat:
        with torch_ao.quiet():
            l05_numbers.record_sweep(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
