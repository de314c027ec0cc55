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


def time_predict_alternating(models: dict, data: dict, rounds: int, warmup: int,
                             pause: float = 0.0) -> dict:
    """Seconds of ``predict`` per round for each model on its preprocessed ``data[name]``, all
    models alternating (each round runs every model once), so machine drift hits them alike.
    ``pause`` seconds of sleep before each model: runtimes (onnxruntime, OpenVINO) keep their
    worker threads spinning for a while after a call, which takes the cores from whatever runs
    next (measured: the demo detector in PyTorch at 2.6x its time alone, right after OpenVINO)."""
    import copy
    times = {name: [] for name in models}
    with torch.no_grad():
        for r in range(warmup + rounds):
            for name, model in models.items():
                if pause:
                    time.sleep(pause)
                samples = copy.deepcopy(data[name]['data_samples'])
                t0 = time.perf_counter()
                model.predict(data[name]['inputs'], samples)
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return times
