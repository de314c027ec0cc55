"""The paper's Fig. 1 and 4 for your own model and image: PNGs of what each DynamicHead block's
scale-, spatial- and task-aware attentions did (from an ``AttentionRecorder``)."""
import math
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch

from .recorder import BRANCHES, BlockRecord, sample_points

COLORS = dict(finer='tab:blue', same='tab:green', coarser='tab:red')


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def scale_table(rec: BlockRecord, n: int = 0) -> np.ndarray:
    """(L, 3) weights of the finer / same / coarser branch of each level (NaN where absent)."""
    table = np.full((len(rec.scale), len(BRANCHES)), np.nan)
    for level, weights in enumerate(rec.scale):
        for j, name in enumerate(BRANCHES):
            if name in weights:
                table[level, j] = float(weights[name][n])
    return table


def draw_scale(blocks: Sequence[BlockRecord], level_names: Sequence[str], path: str, n: int = 0):
    """One heat map per block: the scale-aware weight of each level (rows) and branch (columns)."""
    plt = _plt()
    blocks = [b for b in blocks if b.scale]
    if not blocks:
        return None
    fig, axes = plt.subplots(1, len(blocks), figsize=(2.2 * len(blocks) + 0.8, 0.45 * len(level_names) + 1.4),
                             squeeze=False)
    for i, (ax, rec) in enumerate(zip(axes[0], blocks)):
        table = scale_table(rec, n)
        im = ax.imshow(table, vmin=0, vmax=1, cmap='viridis')
        for (r, c), v in np.ndenumerate(table):
            if not math.isnan(v):
                ax.text(c, r, f'{v:.2f}', ha='center', va='center', fontsize=7,
                        color='white' if v < 0.6 else 'black')
        ax.set_xticks(range(3), ['l-1', 'l', 'l+1'], fontsize=7)
        ax.set_yticks(range(len(level_names)), level_names, fontsize=7)
        ax.set_title(f'block {i}', fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label='scale weight')
    fig.suptitle('scale-aware attention: weight of each level l and branch', fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path


def draw_spatial(image: np.ndarray, neck, blocks: List[BlockRecord],
                 positions: Sequence[Tuple[int, int, int]],
                 to_image: Callable[[int, torch.Tensor], torch.Tensor], path: str, n: int = 0):
    """One panel per block: at each (level, y, x) of ``positions`` (a white cross), the 9 taps of
    each branch (finer blue, same green, coarser red), sized by their mask.
    ``to_image(level, yx)`` maps (9, 2) level pixels (y, x) to image pixels (y, x)."""
    plt = _plt()
    blocks_with = [(i, b) for i, b in enumerate(blocks) if b.offsets]
    if not blocks_with:
        return None
    cols = min(len(blocks_with), 3)
    rows = math.ceil(len(blocks_with) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, (i, _) in zip(axes.flat, blocks_with):
        ax.imshow(image)
        for level, y, x in positions:
            centre = to_image(level, torch.tensor([[float(y), float(x)]]))[0]
            for s in sample_points(neck, blocks, i, level, y, x, n):
                yx = to_image(s.level, s.yx)
                ax.scatter(yx[:, 1], yx[:, 0], s=8 + 60 * s.mask.numpy(), c=COLORS[s.branch],
                           alpha=0.75, edgecolors='none')
            ax.scatter([centre[1]], [centre[0]], marker='x', c='white', s=40)
        ax.set_xlim(-0.5, image.shape[1] - 0.5)  # taps off the image (zero padding) not drawn
        ax.set_ylim(image.shape[0] - 0.5, -0.5)
        ax.set_title(f'block {i}', fontsize=8)
    handles = [plt.Line2D([], [], ls='', marker='o', c=c, label=f'{b} level') for b, c in COLORS.items()]
    fig.legend(handles=handles, loc='lower center', ncol=3, fontsize=8)
    fig.suptitle('spatial-aware attention: where each branch samples (size = mask)', fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path


def draw_task(blocks: Sequence[BlockRecord], level_names: Sequence[str], path: str, n: int = 0):
    """Per block: top, the share of positions where the first linear piece (a1 x + b1) wins, per
    level (rows) and channel (columns); bottom, the spread of a1, b1, a2, b2 over channels."""
    plt = _plt()
    blocks = [b for b in blocks if b.coefficients]
    if not blocks:
        return None
    fig, axes = plt.subplots(2, len(blocks), figsize=(3 * len(blocks) + 0.8, 5), squeeze=False)
    for i, rec in enumerate(blocks):
        share = torch.stack([s[n] for s in rec.piece1_share]).numpy()
        im = axes[0, i].imshow(share, vmin=0, vmax=1, cmap='coolwarm', aspect='auto',
                               interpolation='nearest')
        axes[0, i].set_yticks(range(len(level_names)), level_names, fontsize=7)
        axes[0, i].set_xlabel('channel', fontsize=7)
        axes[0, i].set_title(f'block {i}', fontsize=8)
        coeffs = [torch.cat([c[k][n] for c in rec.coefficients]).numpy() for k in range(4)]
        axes[1, i].boxplot(coeffs, showfliers=False)
        axes[1, i].set_xticks(range(1, 5), ['a1', 'b1', 'a2', 'b2'], fontsize=7)
        axes[1, i].axhline(0, c='grey', lw=0.5)
        axes[1, i].grid(alpha=0.3)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label='share where a1 x + b1 wins')
    fig.suptitle('task-aware attention (dynamic ReLU): which piece wins per channel, and the '
                 'coefficients over channels and levels', fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path
