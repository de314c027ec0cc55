"""One image through a detector with DynamicHead, recorded and drawn as three PNGs."""
import math
import os
import os.path as osp
from typing import Dict

import torch

from .draw import draw_scale, draw_spatial, draw_task
from .recorder import AttentionRecorder, find_neck, strongest_positions


def visualize(model, cfg, image: str, out_dir: str, points: int = 4) -> Dict[str, object]:
    """Runs ``model`` (an mmdet detector, eval mode) on ``image`` with the config's test pipeline
    and writes ``scale.png``, ``spatial.png`` and ``task.png`` in ``out_dir``.

    Returns the paths, the records (``AttentionRecorder.blocks``), the level names, the drawn
    positions and the detector's result."""
    import mmcv
    from mmdet.apis import inference_detector
    if not osp.isfile(image):
        raise FileNotFoundError(f'visualize_attention: no image at {image}')
    neck = find_neck(model)
    model.cfg = cfg  # inference_detector builds the test pipeline from it
    model.eval()
    with AttentionRecorder(neck) as rec:
        result = inference_detector(model, image)
    blocks = rec.blocks
    meta = result.metainfo
    h_scale = meta['scale_factor'][1] if 'scale_factor' in meta else 1.0
    w_scale = meta['scale_factor'][0] if 'scale_factor' in meta else 1.0
    stride0 = max(1, round(meta['batch_input_shape'][0] / blocks[0].sizes[0][0]))
    strides = [stride0 * 2 ** level for level in range(len(blocks[0].sizes))]
    names = [f'P{int(math.log2(s))}' if s & (s - 1) == 0 else f'stride {s}' for s in strides]

    def to_image(level: int, yx: torch.Tensor) -> torch.Tensor:
        # level pixel p sits at p * stride of the network input (mmdet's priors), then undo Resize
        return yx * strides[level] / torch.tensor([h_scale, w_scale], dtype=yx.dtype)

    # positions on levels with room for a 3x3 neighbourhood, strongest in the last block
    levels = [lv for lv, (h, w) in enumerate(blocks[-1].sizes) if min(h, w) >= 3] or [0]
    positions = strongest_positions(blocks[-1], points, levels, min_distance=4)
    os.makedirs(out_dir, exist_ok=True)
    img = mmcv.imread(image, channel_order='rgb')
    paths = dict(scale=draw_scale(blocks, names, osp.join(out_dir, 'scale.png')),
                 spatial=draw_spatial(img, neck, blocks, positions, to_image,
                                      osp.join(out_dir, 'spatial.png')),
                 task=draw_task(blocks, names, osp.join(out_dir, 'task.png')))
    return dict(paths={k: v for k, v in paths.items() if v}, blocks=blocks, level_names=names,
                positions=positions, strides=strides, result=result)
