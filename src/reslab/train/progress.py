"""Per-epoch progress: a tqdm bar on a terminal, a few plain lines otherwise (logs, CI), or nothing."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

# Plain mode prints this many lines per epoch (plus the epoch summary).
PLAIN_LINES_PER_EPOCH = 4


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def epoch_line(metrics: dict, epochs: int) -> str:
    """The epoch's summary line: ``epoch 1/10 lr 0.1 train_loss ...`` (``metrics["epoch"]`` counts from 0)."""
    shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k != "epoch")
    return f"epoch {metrics['epoch'] + 1}/{epochs} {shown}"


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "plain"
    return mode


def run_eta(elapsed: float, steps_done: int, steps_left: int) -> float:
    """Seconds left at this process's pace so far (wall time per step, evaluation included)."""
    return elapsed / max(steps_done, 1) * steps_left


class Progress:
    """Shows loss, accuracy, images/s, and the time left of the current epoch and of the whole run."""

    def __init__(self, mode: str, enabled: bool = True) -> None:
        self.mode = resolve_mode(mode) if enabled else "none"
        self._bar: tqdm | None = None
        self._epoch_label = ""
        self._total = 0
        self._start = 0.0
        self._next_plain = 0
        self._epochs_left = 0  # after the current one
        self._run_start: float | None = None  # when this process trained its first step
        self._run_steps = 0  # steps this process has trained (a resumed run counts from its restart)

    def start_epoch(self, epoch: int, epochs: int, total_steps: int) -> None:
        self._epoch_label = f"epoch {epoch + 1}/{epochs}"
        self._total, self._start = total_steps, time.perf_counter()
        self._epochs_left = epochs - epoch - 1
        if self._run_start is None:
            self._run_start = self._start
        self._next_plain = max(1, total_steps // PLAIN_LINES_PER_EPOCH)
        if self.mode == "bar":
            self._bar = tqdm(
                total=total_steps,
                desc=self._epoch_label,
                file=sys.stdout,
                leave=False,
                dynamic_ncols=True,
                unit="step",
            )

    def update(self, step: int, loss: float, accuracy: float, images: int) -> None:
        """``step`` steps of the epoch are done; ``images`` trained on so far (this process)."""
        if self.mode == "none":
            return
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        rate = images / elapsed
        self._run_steps += 1
        left = run_eta(now - self._run_start, self._run_steps, self._total - step + self._epochs_left * self._total)
        stats = f"loss {loss:.4f} acc {accuracy:.4f} {rate:.0f} img/s run eta {format_seconds(left)}"
        if self._bar is not None:
            self._bar.set_postfix_str(stats, refresh=False)
            self._bar.update(1)
        elif (
            self.mode == "plain"
            and (step % self._next_plain == 0 or step == self._total)
            and step < self._total
        ):
            eta = elapsed / step * (self._total - step)
            print(f"{self._epoch_label} step {step}/{self._total} epoch eta {format_seconds(eta)} {stats}", flush=True)

    def end_epoch(self, line: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.log(line)

    def log(self, line: str) -> None:
        if self.mode != "none":
            (tqdm.write if self._bar is not None else print)(line)
            sys.stdout.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
