"""The lab's training loop shape: shuffled batches until an epoch count or a training-time budget,
with a metric logged every few training minutes (monitor time is not counted as training)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm


class TimedLoop:
    """Yields index batches over `n` items for `epochs` epochs, stopping once `max_minutes` of training
    time (the time the caller spends between two batches) has passed. `monitor()` returns metrics that
    are logged with the training minutes and epoch into `curve` (and `curve_path`, jsonl) at the start,
    every `monitor_every_minutes` and at the end."""

    def __init__(self, n: int, batch: int, epochs: int, max_minutes: float, monitor_every_minutes: float,
                 monitor: Callable[[], dict[str, float]], desc: str, curve_path: Path | None = None):
        self.n, self.batch, self.epochs = n, batch, epochs
        self.max_seconds = max_minutes * 60
        self.every_seconds = monitor_every_minutes * 60
        self.steps_per_epoch = n // batch
        self.total_steps = epochs * self.steps_per_epoch
        self.monitor, self.curve_path = monitor, curve_path
        self.curve: list[dict[str, float]] = []
        self.trained = 0.0
        self.steps = 0
        self.bar = tqdm(total=self.total_steps, desc=desc, mininterval=10)

    @property
    def minutes(self) -> float:
        return self.trained / 60

    @property
    def progress(self) -> float:
        """Share of the run done, by steps or by training time, whichever budget is nearer its end."""
        return min(1.0, max(self.steps / max(1, self.total_steps), self.trained / self.max_seconds))

    def cosine(self) -> float:
        """Cosine decay factor from 1 to 0 over `progress`."""
        return 0.5 * (1 + math.cos(math.pi * self.progress))

    def log(self, **postfix: object) -> None:
        """Show values (e.g. the loss) on the progress bar next to the last monitored metrics."""
        self.bar.set_postfix({**(self.curve[-1] if self.curve else {}), **postfix}, refresh=False)

    def _record(self) -> None:
        row = {"train_minutes": round(self.minutes, 2), "epoch": round(self.steps / self.steps_per_epoch, 2),
               **{k: round(v, 4) for k, v in self.monitor().items()}}
        self.curve.append(row)
        if self.curve_path is not None:
            with open(self.curve_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def __iter__(self) -> Iterator[torch.Tensor]:
        next_monitor = 0.0
        for _ in range(self.epochs):
            perm = torch.randperm(self.n)
            for step in range(self.steps_per_epoch):
                if self.trained >= next_monitor:
                    self._record()
                    next_monitor += self.every_seconds
                t0 = time.time()
                yield perm[step * self.batch:(step + 1) * self.batch]
                self.trained += time.time() - t0
                self.steps += 1
                self.bar.update(1)
                if self.trained >= self.max_seconds:
                    break
            if self.trained >= self.max_seconds:
                break
        self.bar.close()
        self._record()
