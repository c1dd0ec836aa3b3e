"""The benchmark's progress bar: one bar over the levels of a scenario."""

from __future__ import annotations

import sys

from tqdm import tqdm

from harness.load import Result


class Progress:
    """One bar over the levels of a scenario; the live request count in its postfix."""

    def __init__(self, total: int, name: str) -> None:
        # disable=None: a live bar on a terminal, nothing in a log or CI.
        self.bar = tqdm(total=total, desc=name, unit="level", leave=False, file=sys.stderr,
                        disable=None)
        self.label = ""
        self.count = 0

    def level(self, label: str) -> None:
        self.label, self.count = label, 0
        self.bar.set_postfix_str(label)

    def on_done(self, _: Result) -> None:
        self.count += 1
        if self.count % 250 == 0:
            self.bar.set_postfix_str(f"{self.label} {self.count} requests", refresh=True)

    def advance(self) -> None:
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
