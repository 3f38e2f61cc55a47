"""The command-line arguments every tool shares: the run, its checkpoint and the data to embed."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


def parser(tool: str, doc: str) -> argparse.ArgumentParser:
    """`python -m jaxssl.tools.<tool>`'s parser (its description the first paragraph of `doc`), with --workdir."""
    p = argparse.ArgumentParser(prog=f"python -m jaxssl.tools.{tool}", description=doc.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (config.json + checkpoints/)")
    return p


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    """--step (default: the newest) and --teacher (the EMA teacher's backbone instead of the student's)."""
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest good one)")
    p.add_argument("--teacher", action="store_true", help="the EMA teacher's backbone instead of the student's")


def add_data(p: argparse.ArgumentParser) -> None:
    """--dataset, --data_dir and --batch_size of the inputs to embed (defaults: the run's)."""
    p.add_argument("--dataset", default=None, help="dataset name (default: the run's config.data.name)")
    p.add_argument("--data_dir", default=None, help="TFDS data dir (default: the run's, $TFDS_DATA_DIR, "
                                                    "~/tensorflow_datasets)")
    p.add_argument("--batch_size", type=int, default=256, help="inputs per embedding batch on each process")


def run(body: Callable[[], int]) -> int:
    """`body()`, with a bad workdir, checkpoint or argument (or a missing optional package, e.g. for
    a plot) reported as one `error:` line and exit code 2."""
    try:
        return body()
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
