"""LearningCurveHook: the training loss and the val metrics of a run, as a PNG in its work dir."""
import json
import math
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

from mmdet.registry import HOOKS
from mmengine.dist import master_only
from mmengine.hooks import Hook


@HOOKS.register_module()
class LearningCurveHook(Hook):
    """Records the losses (mean over every ``interval`` iterations) and each validation's metrics,
    and writes ``{work_dir}/{filename}.png`` (loss against iteration, val mAP against epoch) and
    ``{filename}.json`` (the numbers) after every validation and at the end of training.

    A resumed run (``--resume``) continues the curve from the saved numbers up to the
    checkpoint's iteration; a new run in the same work dir starts a new one.

    Args:
        interval (int): iterations averaged into one loss point.
        metrics (Sequence[str]): val metrics drawn, by the end of their name (``coco/bbox_mAP``
            matches ``bbox_mAP``); those the evaluator does not give are skipped.
        filename (str): base name of the PNG and JSON files.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 10,
                 metrics: Sequence[str] = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP'),
                 filename: str = 'learning_curve'):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'LearningCurveHook: interval must be an int >= 1, got {interval!r}')
        self.interval, self.metrics, self.filename = interval, tuple(metrics), filename
        self.train: List[dict] = []
        self.val: List[dict] = []
        self._sums: Dict[str, float] = defaultdict(float)
        self._count = 0

    def _path(self, runner, ext: str) -> str:
        return osp.join(runner.work_dir, f'{self.filename}.{ext}')

    def before_train(self, runner) -> None:
        # runs after a resume has loaded its checkpoint, so runner.iter is where training restarts
        self.train, self.val = [], []
        path = self._path(runner, 'json')
        if runner.iter > 0 and osp.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            self.train = [p for p in saved.get('train', []) if p['iter'] <= runner.iter]
            self.val = [p for p in saved.get('val', []) if p['iter'] <= runner.iter]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for key, value in (outputs or {}).items():
            if key.startswith('loss'):
                self._sums[key] += float(value.detach() if hasattr(value, 'detach') else value)
        self._count += 1
        if self._count == self.interval:
            point = {k: v / self._count for k, v in self._sums.items()}
            self.train.append(dict(iter=runner.iter + 1, epoch=runner.epoch, **point))
            self._sums, self._count = defaultdict(float), 0

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        values = {k.split('/')[-1]: float(v) for k, v in (metrics or {}).items()
                  if isinstance(v, (int, float)) and math.isfinite(float(v))}
        self.val.append(dict(iter=runner.iter, epoch=runner.epoch, **values))
        self._write(runner)

    def after_train(self, runner) -> None:
        self._write(runner)

    @master_only
    def _write(self, runner) -> None:
        with open(self._path(runner, 'json'), 'w') as f:
            json.dump(dict(train=self.train, val=self.val), f)
        plot_learning_curve(self.train, self.val, self._path(runner, 'png'), self.metrics,
                            title=osp.basename(osp.normpath(runner.work_dir)))


def plot_learning_curve(train: Sequence[dict], val: Sequence[dict], path: str,
                        metrics: Sequence[str] = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP'),
                        title: str = '') -> str:
    """Draws ``train`` ([{iter, epoch, loss, loss_*}]) and ``val`` ([{iter, epoch, <metric>}])
    side by side and saves the PNG at ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = sorted({k for p in train for k in p if k.startswith('loss')},
                  key=lambda k: (k != 'loss', k))
    for key in keys:
        pts = [(p['iter'], p[key]) for p in train if key in p]
        ax_loss.plot(*zip(*pts), label=key, lw=2 if key == 'loss' else 1)
    ax_loss.set(xlabel='iteration', ylabel='training loss', title='loss')
    drawn = 0
    for name in metrics:
        pts = [(p['epoch'], p[name]) for p in val if name in p]
        if pts:
            ax_val.plot(*zip(*pts), marker='o', label=name)
            drawn += 1
    ax_val.set(xlabel='epoch', ylabel='val', title='validation')
    for ax, n in ((ax_loss, len(keys)), (ax_val, drawn)):
        ax.grid(alpha=0.3)
        if n:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
