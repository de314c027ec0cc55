"""A deterministic COCO-format detection set of drawn shapes, for demos and tests (no downloads).

Six classes of filled shapes with random colours (so the class is in the shape, not the colour),
sizes over a 16x range (scale matters), aspect ratios from 1:2 to 2:1, on textured backgrounds
(gradients, stripes, noise) with clutter (lines and specks that are not objects). Objects may
overlap and occlude each other partly; a box is the full extent of its shape, and its instance
mask (COCO RLE in ``segmentation``) the pixels of it that are visible, exactly as drawn.

    python -m mmdet_dyhead.demo_data --out data/shapes --seed 0 [--if-needed]
"""
import argparse
import json
import math
import os
import random
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring')
MIN_SIZE, MAX_SIZE = 11, 200  # longest side of an object, in pixels: an 18x range (>= 16x drawn)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    grad = rng.uniform(-0.25, 0.25, size=(2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    freq, angle = rng.uniform(0.05, 0.3), rng.uniform(0, math.pi)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)
    img += stripes[..., None] * rng.uniform(5, 25, size=3)
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), base


def _contrasting_color(rng: random.Random, background) -> Tuple[int, int, int]:
    """A random colour at least 80 (summed over RGB) away from the background's mean colour."""
    while True:
        c = tuple(rng.randint(0, 255) for _ in range(3))
        if sum(abs(a - b) for a, b in zip(c, background)) >= 80:
            return c


def _clutter(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int):
    for _ in range(rng.randint(3, 12)):
        c = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.line([(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(2)], fill=c,
                      width=rng.randint(1, 2))
        else:
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, 3)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=c)


def _polygon(cls: str, cx: float, cy: float, sx: float, sy: float, rot: float):
    """Outline points of a polygonal class, before clipping, in image coordinates."""
    if cls == 'square':
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif cls == 'triangle':
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif cls == 'star':
        pts = [(math.cos(a) * r, math.sin(a) * r)
               for i in range(10) for a, r in [(math.pi * i / 5 - math.pi / 2, 1 if i % 2 == 0 else 0.45)]]
    else:  # cross
        t = 0.35
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
               (-1, t), (-1, -t), (-t, -t)]
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + (x * sx) * c - (y * sy) * s, cy + (x * sx) * s + (y * sy) * c) for x, y in pts]


def _draw_object(draw, cls, cx, cy, sx, sy, rot, color):
    """Draws one object; returns its box (x0, y0, x1, y1)."""
    if cls in ('circle', 'ring'):
        box = (cx - sx, cy - sy, cx + sx, cy + sy)
        if cls == 'circle':
            draw.ellipse(box, fill=color)
        else:
            draw.ellipse(box, outline=color, width=max(2, int(min(sx, sy) * 0.3)))
        return box
    pts = _polygon(cls, cx, cy, sx, sy, rot)
    draw.polygon(pts, fill=color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(seed: int, max_side: int = 320,
               masks: bool = True) -> Tuple[Image.Image, List[Dict]]:
    """The image of ``seed`` and its objects: ``category``, ``bbox`` (x0, y0, x1, y1) and, with
    ``masks``, ``mask`` (H, W) bool: the object's visible pixels. Drawing the masks uses no random
    numbers, so images and boxes are the same with and without them."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    w, h = rng.randint(max_side * 3 // 4, max_side), rng.randint(max_side * 3 // 4, max_side)
    img, bg_color = _background(nrng, w, h)
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, w, h)
    placed = []  # (size, cls, cx, cy, sx, sy, rot, box estimate)
    for _ in range(rng.randint(1, 7)):
        for _attempt in range(20):
            # log-size over the full 16x range, more often mid-sized than tiny or huge
            lo, hi = math.log(MIN_SIZE), math.log(min(MAX_SIZE, 0.8 * min(w, h)))
            size = math.exp(rng.triangular(lo, hi, math.log(48)))
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            sx, sy = size / 2 * min(1, aspect), size / 2 * min(1, 1 / aspect)
            cls = rng.choice(CLASSES)
            rot = rng.choice([0.0, 0.0, rng.uniform(-0.4, 0.4)]) if cls != 'circle' else 0.0
            cx, cy = rng.uniform(sx, w - sx), rng.uniform(sy, h - sy)
            pts = _polygon('square', cx, cy, sx, sy, rot)
            est = (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts),
                   max(p[1] for p in pts))
            # partial occlusion allowed, but keep every object mostly visible
            if all(_iou(est, q[-1]) < 0.3 for q in placed):
                placed.append((size, cls, cx, cy, sx, sy, rot, est))
                break
    objects = []
    # large objects first, so a small one is never hidden under a larger one drawn later
    for size, cls, cx, cy, sx, sy, rot, _ in sorted(placed, key=lambda q: -q[0]):
        color = _contrasting_color(rng, bg_color)
        box = _draw_object(draw, cls, cx, cy, sx, sy, rot, color)
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
        obj = dict(category=cls, bbox=box)
        if masks:  # the same drawing call on a blank canvas: exactly the pixels it coloured
            canvas = Image.new('L', (w, h), 0)
            _draw_object(ImageDraw.Draw(canvas), cls, cx, cy, sx, sy, rot, 255)
            obj['mask'] = np.asarray(canvas) > 0
        objects.append(obj)
    if masks:  # what a later (smaller) object covers is not visible in an earlier one
        covered = np.zeros((h, w), bool)
        for obj in reversed(objects):
            obj['mask'] = obj['mask'] & ~covered
            covered |= obj['mask']
    return img, objects


def encode_mask(mask: np.ndarray) -> Dict:
    """(H, W) bool -> COCO compressed RLE, ``{'size': [H, W], 'counts': str}``."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=[int(x) for x in rle['size']], counts=rle['counts'].decode('ascii'))


def _replace(path: str, write):
    """Writes through a temporary file and renames it, so a reader never sees a partial file."""
    tmp = f'{path}.tmp{os.getpid()}'
    write(tmp)
    os.replace(tmp, path)


def write_split(out_dir: str, split: str, num_images: int, seed: int, max_side: int = 320) -> str:
    """Writes ``{out_dir}/{split}/*.jpg`` and ``{out_dir}/annotations/{split}.json``."""
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = make_image(seed * 1_000_003 + i, max_side)
        name = f'{i:05d}.jpg'
        _replace(os.path.join(img_dir, name), lambda p: img.save(p, format='JPEG', quality=95))
        images.append(dict(id=i + 1, file_name=name, width=img.width, height=img.height))
        for obj in objects:
            x0, y0, x1, y1 = obj['bbox']
            bw, bh = round(x1 - x0, 2), round(y1 - y0, 2)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1,
                category_id=CLASSES.index(obj['category']) + 1,
                bbox=[round(x0, 2), round(y0, 2), bw, bh], area=round(bw * bh, 2), iscrowd=0,
                segmentation=encode_mask(obj['mask'])))
    coco = dict(info=dict(description='mmdet_dyhead demo shapes', version=FORMAT),
                images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
    path = os.path.join(out_dir, 'annotations', f'{split}.json')

    def write(p):
        with open(p, 'w') as f:
            json.dump(coco, f)
    _replace(path, write)
    return path


FORMAT = 2  # 2: instance masks (segmentation); 1 (no info): boxes only


def data_format(out_dir: str) -> Optional[int]:
    """The format of the data set in ``out_dir`` (None if there is none)."""
    path = os.path.join(out_dir, 'annotations', 'val.json')
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(out_dir, 'annotations', 'train.json')):
        return None
    with open(path) as f:
        return json.load(f).get('info', {}).get('version', 1)


def generate(out_dir: str, seed: int = 0, num_train: int = 600, num_val: int = 100,
             max_side: int = 320):
    write_split(out_dir, 'train', num_train, seed, max_side)
    write_split(out_dir, 'val', num_val, seed + 1, max_side)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='data/shapes')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-train', type=int, default=600)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument('--max-side', type=int, default=320)
    p.add_argument('--if-needed', action='store_true',
                   help='only if OUT has no data set of this format (boxes unchanged, masks added)')
    a = p.parse_args()
    if a.if_needed and data_format(a.out) == FORMAT:
        return
    generate(a.out, a.seed, a.num_train, a.num_val, a.max_side)
    print(f'wrote {a.num_train} train and {a.num_val} val images to {a.out}')


if __name__ == '__main__':
    main()
