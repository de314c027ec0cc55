#!/usr/bin/env python
"""The accuracy study: train study rows one process at a time, save each run, rebuild the tables.

    python tools/study.py list
    python tools/study.py run --rows atss atss-dyhead4 --seeds 0 1 2 [--epochs 16]
                              [--val-interval 2] [--skip-done] [--commit]
    python tools/study.py tables [--update-readme]
    python tools/study.py latency [--rows ...] [--rounds 20]

``run`` saves each finished run as docs/study/{row}_e{epochs}_s{seed}.json (``--commit`` also
commits that file, so a long study survives interruptions); ``tables`` rebuilds the README's study
tables and the plots in docs/study/ from those files alone. ``latency`` times every row's
detector side by side in one process (docs/study/latency.json), which the tables then use.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet_dyhead import study  # noqa: E402


def _commit(path: str, message: str):
    # in the repository that holds the results, which need not be the one running (a worktree)
    repo = osp.dirname(osp.abspath(path))
    subprocess.run(['git', 'add', osp.abspath(path)], cwd=repo, check=True)
    subprocess.run(['git', 'commit', '-q', '-m', message, '--only', osp.abspath(path)], cwd=repo,
                   check=True)


def cmd_run(a):
    unknown = [r for r in a.rows if r not in study.ROWS]
    if unknown:
        raise SystemExit(f'unknown rows {unknown}; `python tools/study.py list` shows them')
    subprocess.run([sys.executable, '-m', 'mmdet_dyhead.demo_data', '--out', 'data/shapes',
                    '--if-needed'], cwd=study.ROOT, check=True)
    for seed in a.seeds:  # seed-major: an interrupted study still has every row at seed 0
        for name in a.rows:
            run = study.run_name(name, a.epochs, seed)
            path = osp.join(a.results, run + '.json')
            if a.skip_done and osp.isfile(path):
                print(f'[study] {run}: done already ({path})', flush=True)
                continue
            pause = osp.join(a.work_dir, 'PAUSE')
            while osp.exists(pause):  # lets other heavy work run between runs, not beside one
                time.sleep(10)
            print(f'[study] {run}: training', flush=True)
            r = study.run(study.ROWS[name], seed, a.epochs, a.val_interval, a.work_dir, a.results)
            print(f'[study] {run}: mAP {r["bbox_mAP"]:.3f}, loss {r["final_train_loss"]}, '
                  f'{r["train_s"] / 60:.1f} min, {r["latency_ms"]:.0f} ms, '
                  f'{r["gflops"]:.2f} GFLOPs', flush=True)
            if a.commit:
                _commit(path, f'study: {run} mAP {r["bbox_mAP"]:.3f}')


def cmd_tables(a):
    results = study.load_results(a.results)
    tables = study.sections(results)
    for name, md in tables.items():
        print(f'## {name}\n{md}')
    study.write_plots(results, a.results)
    if a.update_readme:
        path = osp.join(study.ROOT, 'README.md')
        with open(path) as f:
            text = f.read()
        with open(path, 'w') as f:
            f.write(study.update_readme(text, tables))
        print('[study] README.md updated')


def cmd_latency(a):
    rows = a.rows or list(study.ROWS)
    unknown = [r for r in rows if r not in study.ROWS]
    if unknown:
        raise SystemExit(f'unknown rows {unknown}; `python tools/study.py list` shows them')
    result = study.measure_latencies(rows, a.rounds)
    path = osp.join(a.results, study.LATENCY_FILE)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    for row, ms in result['rows'].items():
        print(f'{row:32s} {ms:8.1f} ms')
    print(f'[study] {path}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--results', default=study.RESULTS_DIR, help='folder of the saved runs')
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('list', help='the rows')
    r = sub.add_parser('run', help='train and save runs')
    r.add_argument('--rows', nargs='+', required=True)
    r.add_argument('--seeds', nargs='+', type=int, default=[0])
    r.add_argument('--epochs', type=int, default=16)
    r.add_argument('--val-interval', type=int, default=2, help='epochs between val points')
    r.add_argument('--work-dir', default=osp.join(study.ROOT, 'outputs', 'study'))
    r.add_argument('--skip-done', action='store_true', help='skip runs already saved')
    r.add_argument('--commit', action='store_true', help='git-commit each saved run')
    lat = sub.add_parser('latency', help='time every row side by side (latency.json)')
    lat.add_argument('--rows', nargs='+', help='default: every row')
    lat.add_argument('--rounds', type=int, default=20)
    t = sub.add_parser('tables', help='rebuild tables and plots from the saved runs')
    t.add_argument('--update-readme', action='store_true')
    a = p.parse_args(argv)
    if a.cmd == 'list':
        for row in study.ROWS.values():
            print(f'{row.name:32s} {row.label}  [{row.config} {" ".join(study.row_options(row))}]')
    elif a.cmd == 'run':
        cmd_run(a)
    elif a.cmd == 'latency':
        cmd_latency(a)
    else:
        cmd_tables(a)


if __name__ == '__main__':
    main()
