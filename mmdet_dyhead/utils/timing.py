"""Wall-clock timing of a detector's predict and training step, and robust summaries."""
import statistics
import time
from typing import List, Sequence, Tuple

import torch


def sync(device) -> None:
    """Wait for the GPU's queued work, so a timer measures it (a no-op on the CPU)."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def time_inference(model, batch, device: str, iters: int, warmup: int) -> List[float]:
    """Seconds per batch of predict (preprocessing and post-processing included)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            sync(device)
            t0 = time.perf_counter()
            model(**model.data_preprocessor(batch, False), mode='predict')
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def time_train_iter(model, batch, device: str, iters: int, warmup: int) -> List[float]:
    """Seconds per training iteration: loss, backward and an SGD step."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    times = []
    for i in range(warmup + iters):
        sync(device)
        t0 = time.perf_counter()
        loss, _ = model.parse_losses(model(**model.data_preprocessor(batch, True), mode='loss'))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> Tuple[float, float]:
    """Median and interquartile range."""
    if len(times) < 2:
        return times[0], 0.0
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]
