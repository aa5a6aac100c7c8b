"""Import memory and speed: ``recsys events import --file`` at two sizes, each in a fresh process.

    python bench/import_events.py                      # 100k and 1M rows, SQLite
    python bench/import_events.py --store-url postgresql+psycopg://postgres@127.0.0.1/db

Prints rows/s and the peak RSS of each import's process, and the growth from the small file to
the large one: an import streams in chunks, so its memory must not grow with the file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def _write_csv(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("user_id,item_id,event_type,event_time,value\n")
        for k in range(rows):
            out.write(f"u{k % 50_000},i{(k * 7919) % 20_000},view,{1_600_000_000 + k},\n")


def _import(path: str, store_url: str, queue: mp.Queue) -> None:
    from recsys.data import event_files, events

    store = events.EventStore(store_url)
    t0 = time.perf_counter()
    result = event_files.import_file(store, path, Path(path).with_suffix(".rejects.jsonl"))
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((result["read"], result["inserted"], seconds, peak_mib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[100_000, 1_000_000])
    parser.add_argument("--store-url", help="default: a fresh SQLite file per size")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"events-{rows}.csv"
            _write_csv(path, rows)
            url = args.store_url or f"sqlite:///{Path(tmp) / f'events-{rows}.db'}"
            queue: mp.Queue = ctx.Queue()
            proc = ctx.Process(target=_import, args=(str(path), url, queue))
            proc.start()
            results.append((rows, path.stat().st_size, *queue.get()))
            proc.join()
    head = ("rows", "file MiB", "inserted", "seconds", "rows/s", "peak RSS MiB")
    print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(head, (10, 9, 10, 8, 9, 13), strict=True)))
    for rows, size, read, inserted, seconds, peak in results:
        print(f"{rows:>10} {size / 2**20:>9.1f} {inserted:>10} {seconds:>8.1f} "
              f"{read / seconds:>9.0f} {peak:>13.0f}")  # fmt: skip
    (small, *_, p_small), (large, *_, p_large) = results[0], results[-1]
    print(f"peak RSS: {large} rows / {small} rows = {p_large / p_small:.2f}")


if __name__ == "__main__":
    main()
