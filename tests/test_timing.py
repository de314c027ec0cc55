"""mmdet_dyhead/utils/timing.py: the alternating predict timer."""
import time

from mmdet_dyhead.utils.timing import time_predict_alternating


class _Clocked:
    """A stand-in detector whose predict records when it starts."""

    def __init__(self, log, name):
        self.log, self.name = log, name

    def predict(self, inputs, samples):
        self.log.append((self.name, time.perf_counter()))


def test_models_alternate_and_each_call_follows_a_pause():
    """Each round runs every model once, in order; with ``pause`` each call starts at least that
    long after the previous one ended (runtimes' spinning threads wind down meanwhile)."""
    log = []
    models = {name: _Clocked(log, name) for name in ('a', 'b')}
    data = {name: dict(inputs=None, data_samples=[]) for name in models}
    times = time_predict_alternating(models, data, rounds=3, warmup=1, pause=0.05)
    assert [n for n, _ in log] == ['a', 'b'] * 4
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3}
    gaps = [t1 - t0 for (_, t0), (_, t1) in zip(log, log[1:])]
    assert min(gaps) >= 0.05
    log.clear()
    time_predict_alternating(models, data, rounds=3, warmup=0)
    assert max(t1 - t0 for (_, t0), (_, t1) in zip(log, log[1:])) < 0.05  # no pause asked
