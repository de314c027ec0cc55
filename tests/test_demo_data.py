"""The demo data generator: deterministic, valid COCO, the promised variety."""
import hashlib
import json
import os

from pycocotools.coco import COCO

from mmdet_dyhead.demo_data import CLASSES, write_split


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            with open(os.path.join(root, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        write_split(str(tmp_path / name), 'train', 12, seed)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


def test_annotations_are_valid_coco_with_variety(tmp_path):
    path = write_split(str(tmp_path), 'val', 100, 1)  # the demo's val split
    coco = COCO(path)
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 60
    sides, aspects = [], []
    for a in anns:
        img = coco.imgs[a['image_id']]
        x, y, w, h = a['bbox']
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img['width'] + 1e-6 and y + h <= img['height'] + 1e-6
        assert abs(a['area'] - w * h) < 1 and a['iscrowd'] == 0
        sides.append(max(w, h))
        aspects.append(w / h)
    assert max(sides) / min(sides) >= 16  # scale matters
    assert min(aspects) < 0.7 and max(aspects) > 1.4
    assert len({a['category_id'] for a in anns}) == len(CLASSES)
    assert all(max(i['width'], i['height']) <= 320 for i in coco.imgs.values())
    # some objects overlap (partial occlusion)
    by_img = {}
    for a in anns:
        by_img.setdefault(a['image_id'], []).append(a['bbox'])

    def overlap(p, q):
        return min(p[0] + p[2], q[0] + q[2]) > max(p[0], q[0]) and \
            min(p[1] + p[3], q[1] + q[3]) > max(p[1], q[1])
    assert any(overlap(p, q) for bs in by_img.values() for i, p in enumerate(bs) for q in bs[i + 1:])
    with open(path) as f:
        assert json.load(f)['images'][0]['file_name'].endswith('.jpg')


def test_masks_add_nothing_else_and_are_the_drawn_pixels():
    import numpy as np
    from pycocotools import mask as mask_utils

    from mmdet_dyhead.demo_data import encode_mask, make_image
    repeat = 0
    for seed in range(40):
        img, objs = make_image(seed)
        plain_img, plain = make_image(seed, masks=False)
        # drawing the masks takes no random numbers: same pixels, same boxes
        assert np.array_equal(np.asarray(img), np.asarray(plain_img))
        assert [o['bbox'] for o in objs] == [o['bbox'] for o in plain]
        pixels = np.asarray(img).astype(int)
        union = np.zeros(pixels.shape[:2], int)
        for obj in objs:
            m = obj['mask']
            assert m.shape == pixels.shape[:2] and m.any()
            union += m
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = obj['bbox']
            assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1
            assert ys.min() >= y0 - 1 and ys.max() <= y1 + 1
            # one object, one colour: its visible pixels all have the same colour
            assert len(np.unique(pixels[m], axis=0)) == 1
            rle = encode_mask(m)
            assert np.array_equal(mask_utils.decode(dict(rle, counts=rle['counts'].encode())), m)
        assert union.max() <= 1  # visible parts do not overlap
        again = make_image(seed)[1]
        repeat += sum(int((o['mask'] != a['mask']).any()) for o, a in zip(objs, again))
    assert repeat == 0  # deterministic


def test_if_needed_regenerates_old_data_only(tmp_path):
    import subprocess
    import sys

    from mmdet_dyhead.demo_data import FORMAT, data_format
    out = tmp_path / 'shapes'
    cmd = [sys.executable, '-m', 'mmdet_dyhead.demo_data', '--out', str(out), '--num-train', '2',
           '--num-val', '2', '--if-needed']
    assert data_format(str(out)) is None
    assert 'wrote' in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert data_format(str(out)) == FORMAT
    assert subprocess.run(cmd, capture_output=True, text=True, check=True).stdout == ''
    val = out / 'annotations' / 'val.json'
    coco = json.loads(val.read_text())
    del coco['info']  # the format before masks
    val.write_text(json.dumps(coco))
    assert data_format(str(out)) == 1
    assert 'wrote' in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
