"""Sample quality against sampling cost for one trained run, one sampler setting per row.

    .venv/bin/python -m benchmarks.samplers RUN --data fashion-mnist \\
        --settings "sampler=ddim,steps=10; sampler=ddim,steps=20; sampler=ddim,steps=50; sampler=ddpm"

Each setting is a set of the family's sampling options (SampleOptions). For each: `--samples`
images with the same seed, their generation time on this machine, the network evaluations per
image (images passed through the family's networks over images made, counted by forward hooks:
a guided step, which runs a doubled batch, counts two), and FID, KID×10³ and
precision/recall against the reference of benchmarks/quality.py (Fashion/MNIST test-1000 or the
source's held-out tenth), with the shared Inception weights when present.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.quality import QUALITY, _extractor, _options, _source_and_reference
from genstudio.core.metrics.evaluate import generate_uint8, sample_quality
from genstudio.core.runs.run import load_run


@contextlib.contextmanager
def network_evaluations(family) -> Iterator[list[int]]:
    """[images passed through the family's networks] while the block runs."""
    count = [0]

    def counted(_module, _args, output) -> None:
        count[0] += output.shape[0]

    handles = [network.register_forward_hook(counted) for network in family.networks().values()]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--settings", required=True, help='";"-separated, each "key=value,key=value"')
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--extractor", default="auto")
    parser.add_argument("--work", default="/tmp/genstudio-bench")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_run(args.run, device="cpu")
    family = loaded.family
    _source, reference, reference_name = _source_and_reference(args.data, family.spec.size, Path(args.work))
    extractor = _extractor(args.extractor)
    real = extractor.extract(reference)
    rows = []
    for text in (t.strip() for t in args.settings.split(";") if t.strip()):
        values = _options([kv.strip() for kv in text.split(",")])
        options = family.sample_options(values)
        start = time.perf_counter()
        with network_evaluations(family) as evaluated:
            fake = generate_uint8(family, args.samples, seed=0, options=options)
        seconds = time.perf_counter() - start
        figures = sample_quality(real, extractor.extract(fake), set(QUALITY), seed=0)
        rows.append({"setting": text, "nfe": round(evaluated[0] / args.samples, 2), "seconds": round(seconds, 1),
                     **figures})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{loaded.name} ({family.title}, step {loaded.step}); {args.samples} samples vs "
          f"{reference_name}; {extractor.name}; {torch.get_num_threads()} CPU threads")
    print("| sampler | network evaluations | seconds | img/s | FID | KID×10³ | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['nfe']:g} | {r['seconds']} | {args.samples / r['seconds']:.1f} | {r['fid']:.1f} | "
              f"{r['kid'] * 1e3:.1f} | {r['precision']:.2f} | {r['recall']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
