"""Rank 0's progress display: a rich progress bar per epoch plus one summary line per evaluation."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class NullProgress:
    def start_epoch(self, epoch: int, total: int) -> None: ...
    def advance(self, samples: int, text: str | None) -> None: ...
    def end_epoch(self, row: dict) -> None: ...
    def close(self) -> None: ...


class RichProgress:
    def __init__(self, epochs: int, unit: str, metric_columns: tuple[str, ...]):
        self.console = Console(stderr=True, width=200 if not Console(stderr=True).is_terminal else None)
        self.epochs, self.unit, self.metric_columns = epochs, unit, metric_columns
        self._bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                             TextColumn("{task.fields[text]}  {task.fields[rate]}"), TimeElapsedColumn(),
                             TimeRemainingColumn(), console=self.console, transient=True)
        self._task = None

    def start_epoch(self, epoch: int, total: int) -> None:
        if self._task is None:
            self._bar.start()
        else:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task("", total=total or None, epoch=epoch + 1, epochs=self.epochs, text="", rate="")
        self._started, self._seen = time.perf_counter(), 0

    def advance(self, samples: int, text: str | None) -> None:
        self._seen += samples
        if text is None:  # only the bar moves; the text is refreshed when the trainer reads the loss
            self._bar.update(self._task, advance=samples)
            return
        rate = self._seen / max(time.perf_counter() - self._started, 1e-9)
        self._bar.update(self._task, advance=samples, text=text, rate=f"{rate:,.0f} {self.unit}/s")

    def end_epoch(self, row: dict) -> None:
        shown = [f"{k} {row[k]:.4g}" for k in ("train_loss", *self.metric_columns) if isinstance(row.get(k), float)]
        line = (f"epoch {row['epoch']:>6.2f}  it {row['iteration']:>6}  {row['wall_seconds']:8.1f}s  " + "  ".join(shown)
                + (f"  ({row['status']})" if row.get("status") else ""))
        self._bar.console.print(line, highlight=False, markup=False)

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()
