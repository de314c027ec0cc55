"""The accuracy study's bookkeeping: reading mmengine's logs, aggregating seeds, and the README's
study tables being exactly what the saved runs give."""
import json
import os.path as osp
import statistics

import pytest

from mmdet_dyhead import study


def _fake_run(row, seed, mAP, epochs=16, **extra):
    r = dict(row=row, label=study.ROWS[row].label, config=study.ROWS[row].config, options=[],
             seed=seed, epochs=epochs, val_interval=8, bbox_mAP=mAP, bbox_mAP_50=mAP + 0.2,
             bbox_mAP_75=mAP + 0.05, final_train_loss=1.0 + seed / 10, train_s=600.0 + seed,
             latency_ms=20.0 + seed, gflops=1.5, params_m=3.3,
             curve=[dict(epoch=8, bbox_mAP=mAP / 2), dict(epoch=16, bbox_mAP=mAP)])
    r.update(extra)
    return r


def test_read_scalars_curve_final_and_last_epoch_loss(tmp_path):
    vis = tmp_path / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    lines = [dict(loss=3.0, epoch=1, iter=10, step=10), dict(loss=2.0, epoch=2, iter=20, step=20),
             {'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.2, 'step': 2},
             dict(loss=1.5, epoch=4, iter=30, step=30), dict(loss=0.5, epoch=4, iter=40, step=40),
             {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5, 'step': 4}]
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    curve, final, loss = study.read_scalars(str(tmp_path))
    assert curve == [dict(epoch=2, bbox_mAP=0.1, bbox_mAP_50=0.2),
                     dict(epoch=4, bbox_mAP=0.3, bbox_mAP_50=0.5)]
    assert final == curve[-1]
    assert loss == pytest.approx(1.0)  # mean of the last epoch's two log lines only


def test_read_scalars_without_log_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        study.read_scalars(str(tmp_path))


def test_table_reports_mean_and_sample_std_over_seeds():
    runs = [_fake_run('atss', s, m) for s, m in enumerate([0.40, 0.42, 0.47])]
    runs += [_fake_run('atss-dyhead4', 0, 0.5, latency_ms=30.0)]
    md = study.table(study.summarize_rows(runs, ['atss', 'atss-dyhead4'], 16), ref='atss')
    base, dyh = md.splitlines()[2:4]
    m, sd = statistics.fmean([0.40, 0.42, 0.47]), statistics.stdev([0.40, 0.42, 0.47])
    assert f'{m:.3f} ± {sd:.3f}' in base and '| 0,1,2 |' in base
    assert '| 0.500 |' in dyh  # one seed: no spread is claimed
    assert '30 ms (1.43x)' in dyh  # latency against the median of the reference row (21 ms)


def test_detectors_table_gives_each_latency_against_its_own_baseline():
    rows = ['fcos', 'fcos-dyhead', 'mask-rcnn', 'mask-rcnn-dyhead']
    runs = [_fake_run(r, 0, 0.5, latency_ms=ms) for r, ms in zip(rows, [20.0, 30.0, 200.0, 250.0])]
    md = study.sections(runs)['detectors'].splitlines()[2:]
    assert [line.split(' | ')[-3] for line in md] == ['20 ms', '30 ms (1.50x)', '200 ms',
                                                       '250 ms (1.25x)']


def test_mask_column_only_where_a_row_has_masks():
    boxes = study.table(study.summarize_rows([_fake_run('faster-rcnn', 0, 0.4)], ['faster-rcnn'], 16))
    assert 'mask mAP' not in boxes
    runs = [_fake_run('faster-rcnn', 0, 0.4), _fake_run('mask-rcnn', 0, 0.45, segm_mAP=0.41),
            _fake_run('mask-rcnn', 1, 0.45, segm_mAP=0.43)]
    md = study.table(study.summarize_rows(runs, ['faster-rcnn', 'mask-rcnn'], 16)).splitlines()
    assert md[0].split(' | ')[5] == 'mask mAP' and md[1].count('---') == 11
    assert md[2].split(' | ')[5] == '-' and md[3].split(' | ')[5] == '0.420 ± 0.014'
    assert all(line.count('|') == md[0].count('|') for line in md)


def test_small_and_large_ap_are_means_over_seeds():
    runs = [_fake_run('atss', 0, 0.4, bbox_mAP_s=0.2, bbox_mAP_l=0.6),
            _fake_run('atss', 1, 0.4, bbox_mAP_s=0.3, bbox_mAP_l=0.7)]
    md = study.table(study.summarize_rows(runs, ['atss'], 16)).splitlines()
    assert md[0].split(' | ')[5] == 'AP small / large'
    assert md[2].split(' | ')[5] == '0.250 / 0.650'


def test_side_by_side_latency_replaces_each_runs_own(tmp_path):
    for seed, ms in ((0, 30.0), (1, 50.0)):
        study.save(_fake_run('atss', seed, 0.4, latency_ms=ms), str(tmp_path))
    study.save(_fake_run('atss-dyhead4', 0, 0.5, latency_ms=90.0), str(tmp_path))
    (tmp_path / study.LATENCY_FILE).write_text(json.dumps(dict(rows={'atss': 20.0})))
    runs = {(r['row'], r['seed']): r for r in study.load_results(str(tmp_path))}
    assert runs['atss', 0]['latency_ms'] == runs['atss', 1]['latency_ms'] == 20.0
    assert runs['atss', 1]['run_latency_ms'] == 50.0
    assert runs['atss-dyhead4', 0]['latency_ms'] == 90.0  # not in latency.json: its own


def test_runs_of_another_schedule_are_not_mixed_in():
    runs = [_fake_run('atss', 0, 0.4), _fake_run('atss', 1, 0.9, epochs=8)]
    (s,) = study.summarize_rows(runs, ['atss'], 16)
    assert [r['seed'] for r in s.runs] == [0]


def test_update_readme_replaces_only_marked_blocks():
    text = 'a\n<!-- study:main:begin -->\nold\n<!-- study:main:end -->\nb\n'
    new = study.update_readme(text, {'main': '| t |\n', 'depth': '| d |\n'})
    assert new == 'a\n<!-- study:main:begin -->\n| t |\n<!-- study:main:end -->\nb\n'
    assert study.readme_section(new, 'main') == '| t |\n'


def test_save_and_load_round_trip(tmp_path):
    r = _fake_run('atss-dyhead2', 3, 0.5)
    path = study.save(r, str(tmp_path))
    assert osp.basename(path) == 'atss-dyhead2_e16_s3.json'
    assert study.load_results(str(tmp_path)) == [r]


def _row_cfg(name):
    from mmengine.config import Config
    row = study.ROWS[name]
    cfg = Config.fromfile(osp.join(study.ROOT, row.config))
    cfg.merge_from_dict(dict(study._parse_option(o) for o in study.row_options(row)))
    return cfg


def test_rows_set_what_they_vary_whatever_the_configs_defaults():
    neck = _row_cfg('atss-dyhead4-S').model.neck
    assert (neck[1].num_blocks, neck[1].scale_aware, neck[1].task_aware) == (4, False, False)
    assert neck[1].spatial_aware is True
    assert _row_cfg('atss').model.neck.norm_cfg is None  # the plain FPN, though the base has GN
    assert _row_cfg('atss-dyhead4').model.neck[0].norm_cfg is None
    assert _row_cfg('atss-dyhead4').model.neck[1].hsigmoid == 'reference'
    for r in study.ROWS.values():
        assert osp.isfile(osp.join(study.ROOT, r.config)), r.name


def test_the_demo_configs_are_the_recipe_rows():
    """make demo trains what the study's recipe rows measured."""
    from mmengine.config import Config
    for row, config in (('atss-fpngn', 'atss_r18_fpn_16e_shapes.py'),
                        ('atss-dyhead3-convs1', 'atss_r18_fpn_dyhead_16e_shapes.py'),
                        ('fcos', 'fcos_r18_fpn_16e_shapes.py'),
                        ('fcos-dyhead3-convs1', 'fcos_r18_fpn_dyhead_16e_shapes.py')):
        got = _row_cfg(row).model
        demo = Config.fromfile(osp.join(study.ROOT, 'configs/demo', config)).model
        strip = (lambda n: {k: v for k, v in n.items() if k != 'norm_cfg'})  # noqa: E731
        necks = zip(got.neck if isinstance(got.neck, list) else [got.neck],
                    demo.neck if isinstance(demo.neck, list) else [demo.neck])
        for a, b in necks:
            assert strip(a) == strip(b)
            if 'norm_cfg' in b:
                assert (a.norm_cfg.type, a.norm_cfg.num_groups) == (b.norm_cfg.type,
                                                                    b.norm_cfg.num_groups)
        assert got.bbox_head == demo.bbox_head


def test_readme_study_tables_are_what_the_saved_runs_give():
    results = study.load_results()
    with open(osp.join(study.ROOT, 'README.md')) as f:
        readme = f.read()
    tables = study.sections(results)
    for name, md in tables.items():
        assert study.readme_section(readme, name) == md, (
            f'README study table "{name}" differs from docs/study/*.json; '
            f'run python tools/study.py tables --update-readme')


def test_a_section_appears_once_it_has_a_row_of_its_own():
    runs = [_fake_run('atss-fpngn', 0, 0.6), _fake_run('atss-dyhead4-fpngn-hsp', 0, 0.61)]
    assert set(study.sections(runs)) == {'main', 'recipe'}  # ablation would repeat them
    runs.append(_fake_run('atss-dyhead4-S', 0, 0.55))
    tables = study.sections(runs)
    assert set(tables) == {'main', 'recipe', 'ablation'}
    assert 'spatial-aware only' in tables['ablation'] and 'depth' not in tables


def test_depth_points_are_each_rows_depth_and_means(tmp_path):
    runs = [_fake_run('atss-fpngn', s, m) for s, m in enumerate([0.60, 0.62])]
    runs += [_fake_run('atss-dyhead1', 0, 0.55, gflops=1.0),
             _fake_run('atss-dyhead6', 0, 0.63, gflops=2.3, latency_ms=40.0),
             _fake_run('atss-dyhead6', 1, 0.61, gflops=2.3, latency_ms=44.0)]
    rows = {m: r for m, r, _ in study.SECTIONS}['depth']
    points = {p['label']: p for p in study.depth_points(runs, rows, 16)}
    assert list(points) == ['4 stacked convs', '1 block', '6 blocks']  # the section's order
    assert points['6 blocks']['mAP'] == pytest.approx(0.62)
    assert points['6 blocks']['std'] == pytest.approx(statistics.stdev([0.63, 0.61]))
    assert points['6 blocks']['latency_ms'] == 42.0 and points['6 blocks']['gflops'] == 2.3
    assert points['1 block']['gflops'] == 1.0
    assert points['4 stacked convs']['mAP'] == pytest.approx(0.61)
    # the plot is written only from the depth rows
    paths = study.write_plots(runs, str(tmp_path))
    assert osp.basename(paths[-1]) == 'depth.png' and osp.getsize(paths[-1]) > 0
