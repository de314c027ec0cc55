#!/usr/bin/env python
"""What a trained DynamicHead's attentions do: offsets, masks, scale weights, dynamic-ReLU
coefficients per block, and the scale of the pyramid that feeds it, on some val images.

    python tools/attention_stats.py CONFIG CHECKPOINT [--images 16] [--cfg-options K=V ...]
                                    [--json OUT.json]
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402

from mmdet_dyhead.diagnostics import attention_stats  # noqa: E402
from mmdet_dyhead.utils.build import build_detector  # noqa: E402


def val_batches(cfg, images: int):
    """The config's test pipeline on the first ``images`` images of its test set, one at a time."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.dataset import pseudo_collate
    register_all_modules()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    for i in range(min(images, len(dataset))):
        yield pseudo_collate([dataset[i]])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--images', type=int, default=16)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    p.add_argument('--json', help='also write the statistics to this file')
    a = p.parse_args(argv)
    cfg = Config.fromfile(a.config)
    if a.cfg_options:
        cfg.merge_from_dict(a.cfg_options)
    model = build_detector(cfg, 'cpu', a.checkpoint)
    stats = attention_stats(model, val_batches(cfg, a.images))
    for name, values in stats.items():
        print(name, ' '.join(f'{k}={v:g}' for k, v in values.items()))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(stats, f, indent=1)
    return stats


if __name__ == '__main__':
    main()
