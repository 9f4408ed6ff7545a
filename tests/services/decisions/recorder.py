"""A process that records decisions from many threads and prints each id once `record_sync`
has returned for it (the durability test SIGKILLs it mid-run).

    python -m tests.services.decisions.recorder URL SYNCHRONOUS THREADS
"""

from __future__ import annotations

import sys
import threading

from loan_default.services.decisions import DecisionStore
from tests.services.decisions.conftest import make_record


def main() -> None:
    url, synchronous, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = DecisionStore.from_url(url, synchronous=synchronous)  # type: ignore[arg-type]
    out = threading.Lock()

    def loop(worker: int) -> None:
        i = 0
        while True:
            rec = make_record(worker * 1_000_000 + i)
            store.record_sync(rec)
            with out:  # one whole line at a time; the parent only trusts complete lines
                sys.stdout.write(rec.decision_id + "\n")
                sys.stdout.flush()
            i += 1

    for w in range(threads):
        threading.Thread(target=loop, args=(w,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
