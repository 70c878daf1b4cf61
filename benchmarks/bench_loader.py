"""Benchmark: one shuffled epoch over MNIST train, noisynn's TensorLoader vs torch's DataLoader.

Both iterate batches of 256 in a new random order and put them on the model's device. The
baseline is ``torch.utils.data.DataLoader`` over a per-sample ``TensorDataset`` of the same
tensors (one ``__getitem__`` per sample plus a collate per batch); noisynn's loader indexes the
whole tensors once per batch. Prints the median of ``--repeats`` epochs of each, and the ratio
(target: at least 50x).

Usage::

    python benchmarks/bench_loader.py --data-dir /path/to/data   # default: $NOISYNN_DATA_DIR
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from noisynn import data


def _epoch(loader, device: torch.device) -> float:
    start = time.perf_counter()
    seen = 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        seen += yb.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert seen > 0
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(data.store.ENV_DATA_DIR),
                        help="data directory holding mnist/ (default: $NOISYNN_DATA_DIR)")
    parser.add_argument("--dataset", default="mnist", choices=data.DATASETS)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    start = time.perf_counter()
    first = data.load(args.dataset, "train", data_dir=args.data_dir)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    ds = data.load(args.dataset, "train", data_dir=args.data_dir)
    reload_s = time.perf_counter() - start
    print(f"{args.dataset} train: x {tuple(ds.x.shape)}, device {device}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"load: {load_s:.3f} s (cache {first.meta.get('cache', '-')}), "
          f"again: {reload_s:.3f} s (cache {ds.meta.get('cache', '-')})")

    ours = data.batches(ds, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0), device=device)
    theirs = DataLoader(TensorDataset(ds.x, ds.y), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    _epoch(ours, device)  # warm-up (moves the data to the device once, first page faults)
    t_ours = [_epoch(ours, device) for _ in range(args.repeats)]
    t_theirs = [_epoch(theirs, device) for _ in range(args.repeats)]
    # reference: copy all of x once into a warm buffer, the memory traffic every epoch must make
    t_copy, threads, buf = [], torch.get_num_threads(), torch.empty_like(ds.x).copy_(ds.x)
    torch.set_num_threads(1)
    for _ in range(args.repeats):
        start = time.perf_counter()
        buf.copy_(ds.x)
        t_copy.append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    del buf
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"noisynn TensorLoader       : median {m_ours * 1e3:9.1f} ms/epoch over {args.repeats} "
          f"(all: {', '.join(f'{t * 1e3:.1f}' for t in t_ours)})")
    print(f"torch DataLoader           : median {m_theirs * 1e3:9.1f} ms/epoch over {args.repeats} "
          f"(all: {', '.join(f'{t * 1e3:.0f}' for t in t_theirs)})")
    print(f"reference: copy x once     : median {statistics.median(t_copy) * 1e3:9.1f} ms "
          "(1 thread; the memory traffic of any epoch that yields all of x as new batches)")
    print(f"speed-up                   : {m_theirs / m_ours:.1f}x (target >= 50x)")
    if hasattr(os, "getloadavg"):
        print(f"load average               : {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
              "(timings are only meaningful on an otherwise idle machine)")


if __name__ == "__main__":
    main()
