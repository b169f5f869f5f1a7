"""Where an RL update's time goes: seconds (and, on a GPU, peak memory) per phase, and the
generation figures derived from counts: tokens per second, mean response length, the share
of responses cut off at the length limit.

Timing is honest on a GPU: kernels run asynchronously, so the clock is read only after
``torch.cuda.synchronize()`` at both ends of a phase; otherwise a phase would be charged
for the previous one's queued work. On CPU a phase costs two ``time.perf_counter()`` calls
and nothing else. On a GPU each phase also starts with ``reset_peak_memory_stats`` and ends
by reading ``max_memory_allocated``: the peak of that phase alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

# The phases of one update, in order, by the name they are logged under (time/NAME).
PHASES = (
    "generation",
    "scoring",
    "policy_logprobs",
    "reference_logprobs",
    "advantages",
    "update",
)
SECONDS_PREFIX = "time/"
MEMORY_PREFIX = "gpu_memory_peak_bytes/"
UPDATE_SECONDS = "time/total"  # the wall time of the whole update, phases included


class PhaseClock:
    """Measures the phases of one update; ``start_update()`` clears the previous one's."""

    def __init__(self, device: torch.device) -> None:
        self.on_gpu = device.type == "cuda"
        self.device = device
        self.seconds: dict[str, float] = {}
        self.memory_peaks: dict[str, float] = {}
        self._update_started: float | None = None
        self.update_seconds: float | None = None

    def _synchronize(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)

    def start_update(self) -> None:
        self.seconds, self.memory_peaks, self.update_seconds = {}, {}, None
        self._synchronize()
        self._update_started = time.perf_counter()

    def end_update(self) -> None:
        if self._update_started is None:
            return
        self._synchronize()
        self.update_seconds = time.perf_counter() - self._update_started
        self._update_started = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (added up if the phase runs more than once)."""
        if self.on_gpu:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.on_gpu:
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.on_gpu:
                peak = float(torch.cuda.max_memory_allocated(self.device))
                self.memory_peaks[name] = max(self.memory_peaks.get(name, 0.0), peak)

    def metrics(self) -> dict[str, float]:
        """The latest update's figures under their logged names."""
        figures = {SECONDS_PREFIX + name: seconds for name, seconds in self.seconds.items()}
        figures.update({MEMORY_PREFIX + name: peak for name, peak in self.memory_peaks.items()})
        if self.update_seconds is not None:
            figures[UPDATE_SECONDS] = self.update_seconds
        return figures


# --- the generation figures, pure ------------------------------------------------------


def response_lengths(response_mask: torch.Tensor) -> torch.Tensor:
    """Tokens in each response (its stop token included, padding not)."""
    return response_mask.to(torch.float32).sum(dim=1)


def truncated_share(ends_with_stop_token: torch.Tensor) -> torch.Tensor:
    """Share of responses that hit the length limit: those without a stop token (generation
    ends early only at a stop token, so a response without one ran to the limit)."""
    if ends_with_stop_token.numel() == 0:
        return torch.tensor(0.0)
    return (~ends_with_stop_token.bool()).to(torch.float32).mean()


def tokens_per_second(tokens: float, seconds: float) -> float:
    """Generation throughput; 0 when no time was measured."""
    return float(tokens) / seconds if seconds > 0 else 0.0
