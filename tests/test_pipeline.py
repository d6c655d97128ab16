"""Enrollment, verification and identification on the tiny trained model, and their bad inputs."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import configure
import enroll
import identification
import verification
from dvector import embedding, records, stage
from dvector.atomic import atomic_save, atomic_write
from dvector.checkpoint import load_checkpoint
from dvector.embedding import d_vector, embed_file, split_segments
from dvector.feature_files import FeatureFileError
from dvector.records import (
    ENROLLMENT_SETTINGS,
    SWITCH_JOURNAL,
    enrollment_lock,
    load_enrollment,
    save_enrollment,
    save_threshold,
    threshold_path,
)
from dvector.stage import Bfloat16Units, embedding_dtype, load_model

from conftest import copy_checkpoint, embed_arrays, model_args, write_feature, write_feature_tree


@pytest.fixture
def enrolled(trained, feature_tree, tmp_path):
    """The flags of a run whose test speakers are enrolled in tmp_path/emb."""
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    enroll.main(args)
    return args


def test_enrollment_writes_a_unit_d_vector_per_speaker(enrolled, tmp_path):
    files = sorted(p.name for p in (tmp_path / 'emb').iterdir())
    assert files == ['tst0.pth', 'tst1.pth', 'tst2.pth']
    record = torch.load(tmp_path / 'emb' / 'tst0.pth', weights_only=True)
    assert record['embedding'].shape == (128,)
    assert abs(record['embedding'].norm().item() - 1) < 1e-5
    assert record['files'][0].endswith('tst0/enroll.p')


def test_verification_accepts_above_the_threshold(enrolled):
    same, _ = verification.main(enrolled + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])
    other, _ = verification.main(enrolled + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst1'])
    assert same > other
    threshold = str((same + other) / 2)
    assert verification.main(enrolled + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0',
                                         '--threshold', threshold])[1] == 'Accept'
    assert verification.main(enrolled + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst1',
                                         '--threshold', threshold])[1] == 'Reject'


@pytest.mark.parametrize('flags', [['--json'], ['--calibrate'], ['--scores', 's.txt'], ['--root', 'data'],
                                   ['--json', '--calibrate']])
def test_trial_list_flags_are_refused_without_a_trial_list(flags, capsys):
    with pytest.raises(SystemExit):
        verification.parse_args(flags)
    assert f"{', '.join(f for f in flags if f.startswith('--'))}: for a trial list only; add --trials LIST" in \
        capsys.readouterr().err
    assert verification.parse_args(['--trials', 'list.txt', *flags]).trials == 'list.txt'


def test_identification(enrolled, capsys, tmp_path):
    assert identification.main(enrolled + ['--test-speaker', 'tst1']) == 'tst1'
    accuracy = identification.main(enrolled + ['--all', '--results-dir', str(tmp_path / 'results')])
    assert accuracy == {1: 100, 5: 100}  # three well-separated made-up voices
    out = capsys.readouterr().out
    assert 'Top-1 identification accuracy: 100.00% (3/3 test files, 3 enrolled speakers)' in out
    assert (tmp_path / 'results' / 'confusion_matrix.png').stat().st_size > 1000


def test_unknown_speakers_get_a_list_of_the_enrolled(enrolled):
    with pytest.raises(ValueError, match="speaker 'nobody' is not enrolled; enrolled speakers: tst0, tst1, tst2"):
        verification.main(enrolled + ['--enroll-speaker', 'nobody'])
    with pytest.raises(ValueError, match="speaker 'nobody' is not enrolled"):
        identification.main(enrolled + ['--test-speaker', 'nobody'])


def test_identifying_speakers_that_are_not_enrolled(trained, feature_tree, tmp_path):
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    enroll.main(args)
    (tmp_path / 'emb' / 'tst2.pth').unlink()
    with pytest.raises(ValueError, match='test speakers not enrolled: tst2'):
        identification.main(args + ['--all'])


def test_identifying_with_no_test_files(trained, tmp_path):
    write_feature_tree(tmp_path, n_train_speakers=0, n_test_speakers=1)
    (tmp_path / 'test' / 'tst0' / 'test.p').unlink()
    args = model_args(trained, tmp_path, tmp_path / 'emb')
    enroll.main(args)
    with pytest.raises(FileNotFoundError, match="no test files"):
        identification.main(args + ['--all'])


def test_missing_corrupt_and_foreign_checkpoints(trained, feature_tree, tmp_path):
    def enroll_with(checkpoint):
        enroll.main(model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(checkpoint)])

    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*nothere.pth'):
        enroll_with(tmp_path / 'nothere.pth')
    (tmp_path / 'corrupt.pth').write_bytes((trained / 'checkpoint_1.pth').read_bytes()[:1000])
    with pytest.raises(ValueError, match='corrupt.pth: not a readable checkpoint'):
        enroll_with(tmp_path / 'corrupt.pth')
    atomic_save({'weights': torch.zeros(3)}, tmp_path / 'foreign.pth')
    with pytest.raises(ValueError, match="foreign.pth: not a checkpoint written by this project's train.py"):
        enroll_with(tmp_path / 'foreign.pth')
    ckpt = torch.load(trained / 'checkpoint_1.pth', weights_only=True)
    for level in (float('nan'), float('inf'), 'loud'):  # a level that level 'auto' would turn into any gain
        atomic_save({**ckpt, 'feature': {**ckpt['feature'], 'train_level': level}}, tmp_path / 'level.pth')
        with pytest.raises(ValueError, match=r"level.pth: its training speech level .* is not a level in dBFS"):
            enroll_with(tmp_path / 'level.pth')


@pytest.mark.slow
def test_enrollment_made_by_another_model_is_refused_until_enrolled_again(trained, feature_tree, tmp_path, capsys):
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    enroll.main(args + ['--checkpoint', str(trained / 'checkpoint_1.pth')])
    atomic_save({'embedding': torch.ones(128), 'model_id': 'old/epoch9'}, tmp_path / 'emb' / 'gone.pth')
    new = ['--checkpoint', str(trained / 'checkpoint_2.pth')]
    with pytest.raises(ValueError, match=r"holds d-vectors of another model than .*checkpoint_2.pth \(.*/epoch2\), "
                                         r"whose scores would be noise: gone, tst0, tst1, tst2 \(model "
                                         r"(.*/epoch1, old/epoch9|old/epoch9, .*/epoch1)\)\. Enroll them") as error:
        verification.main(args + new)
    assert f"enroll.py --checkpoint {trained / 'checkpoint_2.pth'} --embedding-dir {tmp_path / 'emb'} " \
           f"--test-feat-dir {feature_tree / 'test'}" in str(error.value)  # the folder tst0-2 came from
    assert '<the folder of their enrollment files>' in str(error.value) and '--replace' in str(error.value)
    enroll.main(args + new)  # the command the error gives: tst0-2 with the new model; gone.pth stays
    assert 'Note: verification and identification will refuse' in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"another model .*: gone \(model old/epoch9\)"):
        identification.main(args + new)
    enroll.main(args + new + ['--replace'])  # or start afresh
    assert 'Removed the earlier enrollment of: gone' in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['tst0.pth', 'tst1.pth', 'tst2.pth']
    verification.main(args + new + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])


def test_enrollment_never_deletes_files_that_are_not_enrollments(trained, feature_tree, tmp_path):
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    (tmp_path / 'emb').mkdir()
    (tmp_path / 'emb' / 'notes.pth').write_bytes(b'not an enrollment')
    (tmp_path / 'emb' / 'checkpoint_1.pth').write_bytes((trained / 'checkpoint_1.pth').read_bytes())
    enroll.main(args)
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['checkpoint_1.pth', 'notes.pth', 'tst0.pth',
                                                                     'tst1.pth', 'tst2.pth']
    with pytest.raises(ValueError, match=r'checkpoint_1.pth: not an enrollment file written by enroll.py; move it'):
        verification.main(args)


def test_enrolling_adds_speakers_and_replace_drops_the_others(trained, feature_tree, tmp_path, capsys):
    enroll.main(model_args(trained, feature_tree, tmp_path / 'emb'))
    before = torch.load(tmp_path / 'emb' / 'tst1.pth', weights_only=True)['embedding']
    other = write_feature_tree(tmp_path / 'other', n_train_speakers=0, n_test_speakers=2, seed=9)
    (other / 'test' / 'tst0').rename(other / 'test' / 'new0')  # a new speaker, and tst1 enrolled anew
    enroll.main(model_args(trained, other, tmp_path / 'emb'))
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['new0.pth', 'tst0.pth', 'tst1.pth', 'tst2.pth']
    assert not torch.equal(torch.load(tmp_path / 'emb' / 'tst1.pth', weights_only=True)['embedding'], before)
    assert 'Removed' not in capsys.readouterr().out
    enroll.main(model_args(trained, other, tmp_path / 'emb') + ['--replace'])
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['new0.pth', 'tst1.pth']
    assert 'Removed the earlier enrollment of: tst0, tst2' in capsys.readouterr().out


def test_a_bad_enrollment_file_leaves_the_old_enrollment_whole(trained, feature_tree, tmp_path):
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    enroll.main(args)
    before = {p.name: p.read_bytes() for p in (tmp_path / 'emb').iterdir()}
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0)
    write_feature(tree / 'test' / 'tst2' / 'enroll.p', np.zeros((120, 40)), 'tst2')  # too short
    with pytest.raises(FeatureFileError, match='too short'):
        enroll.main(model_args(trained, tree, tmp_path / 'emb'))
    assert {p.name: p.read_bytes() for p in (tmp_path / 'emb').iterdir()} == before


@pytest.mark.slow
def test_a_single_trial_is_scored_and_thresholded_as_its_speaker_was_enrolled(trained, feature_tree, tmp_path,
                                                                              capsys):
    checkpoint = copy_checkpoint(trained, tmp_path)  # its thresholds go beside it
    args = model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(checkpoint)]
    enroll.main(args + ['--enroll-frames', '100'])
    record = torch.load(tmp_path / 'emb' / 'tst0.pth', weights_only=True)
    assert {k: record[k] for k in ENROLLMENT_SETTINGS} == {'enroll_frames': 100, 'vad': 'no', 'level': 'auto'}
    ckpt = load_checkpoint(checkpoint)
    scoring = {'enroll_frames': 100, 'test_frames': 100, 'score_norm': 'none'}
    save_threshold(checkpoint, ckpt, {'threshold': 0.25}, scoring, {'vad': 'no', 'level': 'no'})
    trial = args + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst1']
    capsys.readouterr()
    score, _ = verification.main(trial)  # ENROLL_FRAMES is 200: the enrollment's 100 finds the threshold
    out = capsys.readouterr()
    assert 'Threshold: 0.2500 (calibrated' in out.out and 'Note' not in out.err
    assert '(enrolled with --enroll-frames 100 --vad no --level auto)' in out.out
    assert verification.main(trial + ['--enroll-frames', '100'])[0] == score  # the enrollment's own value
    with pytest.raises(ValueError, match='--enroll-frames 200: tst0 was enrolled with --enroll-frames 100 --vad no '
                                         '--level auto, and a single trial is scored as its enrollment was made; '
                                         'enroll again'):
        verification.main(trial + ['--enroll-frames', '200'])  # it could not change the stored d-vector

    save_threshold(checkpoint, ckpt, {'threshold': 0.25}, {**scoring, 'enroll_frames': 200},
                           {'vad': 'no', 'level': 'no'})
    with pytest.raises(ValueError, match="was calibrated for scoring {'enroll_frames': 200"):
        verification.main(trial)
    save_threshold(checkpoint, ckpt, {'threshold': 0.25}, scoring, {'vad': 'energy', 'level': -44.0})
    verification.main(trial)  # another front end: a note, not a refusal (the pretrained threshold is clean speech)
    err = capsys.readouterr().err
    assert 'Note: the threshold (calibrated, ' in err
    assert ') was calibrated with --vad energy --level -44.0, this trial is scored with --vad no --level auto' in err
    path = threshold_path(checkpoint)
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != 'front_end'}))
    with pytest.raises(ValueError, match='does not record the --vad and --level it was calibrated with .*calibrate '
                                         'again'):
        verification.main(trial)


def test_an_enrollment_of_an_older_enroll_py_is_refused_with_how_to_enroll_again(enrolled, feature_tree, tmp_path):
    path = tmp_path / 'emb' / 'tst0.pth'
    record = torch.load(path, weights_only=True)
    atomic_save({k: v for k, v in record.items() if k not in ENROLLMENT_SETTINGS}, path)
    for script, flags in ((verification, ['--enroll-speaker', 'tst1']), (identification, [])):
        with pytest.raises(ValueError, match=r"an older enroll.py enrolled tst0, without recording how "
                                             r"\(--enroll-frames, --vad, --level\); re-run enroll.py: "
                                             r"python enroll.py --checkpoint .* "
                                             f"--test-feat-dir {feature_tree / 'test'}"):
            script.main(enrolled + flags)


def test_missing_enrollment(trained, feature_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match='no enrolled speakers in .*(run enroll.py first)'):
        verification.main(model_args(trained, feature_tree, tmp_path / 'none'))


def test_wrong_feature_dimension_at_enrollment(trained, tmp_path):
    write_feature(tmp_path / 'test' / 'x' / 'enroll.p', np.zeros((300, 13)), 'x')
    with pytest.raises(FeatureFileError, match='enroll.p: feature dimension 13, expected 40'):
        enroll.main(model_args(trained, tmp_path, tmp_path / 'emb'))


def test_batched_embedding_gives_the_d_vectors_of_the_definition(trained, monkeypatch):
    model, _ = load_model(trained / 'checkpoint_best.pth', 'cpu', 'fp32')
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 40)) for n in (437, 100, 250, 99, 437)]
    expected = torch.stack([d_vector(model, f, 100, 'cpu') for f in feats])  # the tutorial's loop
    torch.testing.assert_close(embed_arrays(model, feats[:1], 100), expected[:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embed_arrays(model, feats, 100), expected, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(embedding, 'MAX_BATCH', 3)  # many forward passes, split inside one utterance's segments
    torch.testing.assert_close(embed_arrays(model, feats, 100), expected, atol=1e-5, rtol=1e-5)
    assert [len(s) for s in split_segments(feats[0], 100)] == [100, 100, 100, 100, 37]


@pytest.mark.slow
def test_bfloat16_embedding_is_close_to_float32_and_fp32_is_one_flag_away(trained, feature_tree, tmp_path,
                                                                          monkeypatch):
    feats = [np.random.default_rng(1).normal(size=(n, 40)) for n in (437, 250)]
    exact = embed_arrays(load_model(trained / 'checkpoint_best.pth', 'cpu', 'fp32')[0], feats, 100)
    bf16 = embed_arrays(load_model(trained / 'checkpoint_best.pth', 'cpu', 'bf16')[0], feats, 100)
    assert not torch.equal(bf16, exact) and (bf16 * exact).sum(1).min() > 0.999  # cosines of unit vectors
    monkeypatch.setattr(configure, 'EMBED_PRECISION', 'bf16')  # the flag must win over the setting
    enroll.main(model_args(trained, feature_tree, tmp_path / 'emb') + ['--embed-precision', 'fp32'])
    record = torch.load(tmp_path / 'emb' / 'tst0.pth', weights_only=True)
    model, ckpt = load_model(trained / 'checkpoint_best.pth', 'cpu', 'fp32')
    expected = embed_file(model, ckpt['feature'], record['files'][0], 200, 'cpu')
    torch.testing.assert_close(record['embedding'], expected)


@pytest.mark.parametrize('script', [enroll, verification, identification])
def test_the_embedding_precision_has_one_flag_and_one_name(script):
    assert script.parse_args(['--embed-precision', 'bf16']).embed_precision == 'bf16'
    assert script.parse_args([]).embed_precision == configure.EMBED_PRECISION
    assert not hasattr(script.parse_args([]), 'precision')  # --precision is training's autocast, in train.py only
    with pytest.raises(SystemExit):
        script.parse_args(['--precision', 'bf16'])


def test_embedding_precision_auto_is_bfloat16_only_where_it_is_fast(monkeypatch):
    cpu = torch.device('cpu')
    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(stage, 'bfloat16_units', lambda device, fast=fast: Bfloat16Units(fast, ''))
        assert embedding_dtype('auto', cpu) == expected
    assert embedding_dtype('fp32', cpu) == torch.float32 and embedding_dtype('bf16', cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown embedding precision 'fp16' .EMBED_PRECISION of configure.py"):
        embedding_dtype('fp16', cpu)


def test_enrolling_averages_several_files(trained, tmp_path):
    tree = write_feature_tree(tmp_path, n_train_speakers=0, n_test_speakers=1)
    extra = tree / 'test' / 'tst0' / 'enroll_2.p'
    write_feature(extra, np.random.default_rng(5).normal(size=(400, 40)), 'tst0')
    enroll.main(model_args(trained, tree, tmp_path / 'emb'))
    record = torch.load(tmp_path / 'emb' / 'tst0.pth', weights_only=True)
    assert [f.rsplit('/', 1)[1] for f in record['files']] == ['enroll.p', 'enroll_2.p']
    model, ckpt = load_model(trained / 'checkpoint_best.pth', 'cpu', configure.EMBED_PRECISION)  # as the scripts embed
    vectors = [embed_file(model, ckpt['feature'], f, 200, 'cpu') for f in record['files']]
    torch.testing.assert_close(record['embedding'], torch.nn.functional.normalize(vectors[0] + vectors[1], dim=0))


# ---- Enrollment safe against a second writer and a kill, finite d-vectors, every bad file named (issue 22) -----

def test_a_second_enroll_py_into_a_folder_is_refused_while_one_runs(trained, feature_tree, tmp_path):
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    with enrollment_lock(tmp_path / 'emb'):  # another enroll.py, embedding
        with pytest.raises(ValueError, match=f"{tmp_path / 'emb'}: another enroll.py is enrolling into it now"):
            enroll.main(args + ['--replace'])
        assert not list((tmp_path / 'emb').iterdir())
    assert not (tmp_path / 'emb').exists()  # the holder made it, and left it empty: removed
    enroll.main(args)  # the lock is let go with its holder
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['tst0.pth', 'tst1.pth', 'tst2.pth']



class Killed(BaseException):
    """A SIGKILL as a test makes one: nothing in the stages catches it, so nothing cleans up after it."""


def enroll_killed(monkeypatch, args, where):
    """Run enroll.main(args), killed 'before the switch' (each new record written whole under a temporary name, the
    journal not yet) or 'during the switch' (the journal written, one new record renamed into place)."""
    write, replace = atomic_write, os.replace

    def write_but_the_journal(path, *rest):
        if Path(path).name == SWITCH_JOURNAL:
            raise Killed()
        write(path, *rest)

    def replace_once(src, dst):
        replace(src, dst)
        if str(src).endswith('.new.tmp'):
            raise Killed()

    with monkeypatch.context() as m:
        if where == 'before the switch':
            m.setattr(records, 'atomic_write', write_but_the_journal)
        else:
            m.setattr(os, 'replace', replace_once)
        with pytest.raises(Killed):
            enroll.main(args)


def folder_state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith('.')}


def test_an_enrollment_killed_before_its_switch_leaves_the_folder_as_it_was(trained, feature_tree, tmp_path,
                                                                           monkeypatch):
    enroll.main(model_args(trained, feature_tree, tmp_path / 'emb'))
    before = folder_state(tmp_path / 'emb')
    other = write_feature_tree(tmp_path / 'other', n_train_speakers=0, n_test_speakers=2, seed=9)
    enroll_killed(monkeypatch, model_args(trained, other, tmp_path / 'emb') + ['--replace'], 'before the switch')
    assert folder_state(tmp_path / 'emb') == before
    assert [p.name for p in (tmp_path / 'emb').glob('.*.tmp')]  # what the killed run left
    ckpt = load_checkpoint(trained / 'checkpoint_best.pth')
    assert sorted(load_enrollment(tmp_path / 'emb', ckpt)) == ['tst0', 'tst1', 'tst2']
    enroll.main(model_args(trained, other, tmp_path / 'emb'))  # the next run cleans up
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['tst0.pth', 'tst1.pth', 'tst2.pth']


def test_an_enrollment_killed_during_its_switch_is_completed_before_the_folder_is_read(trained, feature_tree,
                                                                                       tmp_path, monkeypatch):
    enroll.main(model_args(trained, feature_tree, tmp_path / 'emb'))
    other = write_feature_tree(tmp_path / 'other', n_train_speakers=0, n_test_speakers=2, seed=9)
    (other / 'test' / 'tst0').rename(other / 'test' / 'new0')
    enroll_killed(monkeypatch, model_args(trained, other, tmp_path / 'emb') + ['--replace'], 'during the switch')
    assert (tmp_path / 'emb' / SWITCH_JOURNAL).is_file()  # new0 renamed, tst1 not yet, tst0 and tst2 there
    ckpt = load_checkpoint(trained / 'checkpoint_best.pth')
    enrolled = load_enrollment(tmp_path / 'emb', ckpt)
    assert sorted(enrolled) == ['new0', 'tst1'] and enrolled['tst1']['test_dir'] == str(other / 'test')
    assert sorted(p.name for p in (tmp_path / 'emb').iterdir()) == ['new0.pth', 'tst1.pth']


def test_d_vectors_that_are_not_finite_are_refused_where_made_written_and_read(trained, feature_tree, tmp_path):
    class NaNModel:
        def embed(self, x):
            return torch.full((len(x), 8), float('nan'))

    with pytest.raises(FeatureFileError, match=r'^b\.p: its d-vector: NaN or infinite values$'):
        embedding.embed_all(NaNModel(), ['b.p'], lambda name: np.zeros((150, 40)), 100, 'cpu')
    ckpt = load_checkpoint(trained / 'checkpoint_best.pth')
    settings = {k: 'no' for k in ENROLLMENT_SETTINGS}
    with pytest.raises(ValueError, match='the d-vector of tst1: NaN or infinite values'):
        save_enrollment(tmp_path / 'emb', {'tst0': (torch.ones(128), ['a.p']),
                                                   'tst1': (torch.full((128,), float('inf')), ['b.p'])},
                                ckpt, 'test', settings)
    assert not (tmp_path / 'emb').exists() or not list((tmp_path / 'emb').iterdir())
    args = model_args(trained, feature_tree, tmp_path / 'emb')
    enroll.main(args)
    record = torch.load(tmp_path / 'emb' / 'tst2.pth', weights_only=True)
    atomic_save({**record, 'embedding': torch.full((128,), float('nan'))}, tmp_path / 'emb' / 'tst2.pth')  # older
    for script, flags in ((verification, ['--enroll-speaker', 'tst0']), (identification, [])):
        with pytest.raises(ValueError, match=r'the d-vectors of tst2 are not finite .*; enroll them again: python'):
            script.main(args + flags)


def test_every_enrollment_file_that_cannot_be_used_is_named_and_nothing_is_written(trained, tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0)
    write_feature(tree / 'test' / 'tst0' / 'enroll.p', np.zeros((120, 40)), 'tst0')  # too short
    write_feature(tree / 'test' / 'tst2' / 'enroll.p', np.zeros((300, 13)), 'tst2')  # wrong dimension
    with pytest.raises(FeatureFileError) as error:
        enroll.main(model_args(trained, tree, tmp_path / 'emb'))
    message = str(error.value)
    assert message.startswith('2 files cannot be used:\n  ')
    assert 'tst0/enroll.p: too short' in message and 'tst2/enroll.p: feature dimension 13, expected 40' in message
    assert not list((tmp_path / 'emb').glob('*.pth'))


def test_identification_of_every_test_file_names_every_bad_one(trained, tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0)
    args = model_args(trained, tree, tmp_path / 'emb')
    enroll.main(args)
    write_feature(tree / 'test' / 'tst0' / 'test.p', np.zeros((120, 40)), 'tst0')
    (tree / 'test' / 'tst1' / 'test.p').write_bytes(b'not a pickle')
    with pytest.raises(FeatureFileError, match=r'^2 files cannot be used:\n  .*tst0/test.p: too short.*\n  '
                                               r'.*tst1/test.p: not a readable feature pickle'):
        identification.main(args + ['--all', '--results-dir', str(tmp_path / 'results')])


def test_a_speaker_folder_without_enrollment_files_is_named(trained, tmp_path, capsys):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0)
    (tree / 'test' / 'tst1' / 'enroll.p').unlink()
    (tree / 'test' / 'empty').mkdir()
    enroll.main(model_args(trained, tree, tmp_path / 'emb'))
    assert (f"Note: not enrolled, no enrollment files (.p or audio named like 'enroll*') in: "
            f"{tree / 'test' / 'empty'}, {tree / 'test' / 'tst1'}") in capsys.readouterr().out
    assert sorted(p.stem for p in (tmp_path / 'emb').glob('*.pth')) == ['tst0', 'tst2']


def test_test_file_naming_a_folder_says_it_is_a_folder(enrolled, feature_tree):
    for script, flags in ((verification, ['--enroll-speaker', 'tst0']), (identification, [])):
        with pytest.raises(ValueError, match=f"{feature_tree / 'test' / 'tst0'}: a folder, not a file"):
            script.main(enrolled + flags + ['--test-file', str(feature_tree / 'test' / 'tst0')])


def test_a_hostile_or_random_checkpoint_is_refused_without_advice_to_load_it_unsafely(trained, feature_tree,
                                                                                     tmp_path):
    class Hostile:
        def __reduce__(self):
            return os.system, ('echo owned',)

    torch.save({'state_dict': Hostile()}, tmp_path / 'hostile.pth')
    (tmp_path / 'random.pth').write_bytes(np.random.default_rng(0).bytes(4000))
    for name, problem in (('hostile.pth', 'unsupported GLOBAL posix.system'), ('random.pth', '')):
        with pytest.raises(ValueError, match=f'{name}: not a readable checkpoint \\(.*{problem}') as error:
            enroll.main(model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(tmp_path / name)])
        assert 'weights_only' not in str(error.value)


def test_a_checkpoint_whose_settings_do_not_fit_together_is_refused_when_loaded(trained, tmp_path):
    ckpt = torch.load(trained / 'checkpoint_best.pth', weights_only=True)
    path = copy_checkpoint(trained, tmp_path, feature={**ckpt['feature'], 'n_filters': 64})
    with pytest.raises(ValueError, match=r"the checkpoint's settings do not fit together: its model .* does not take "
                                         r"its features .*'n_filters': 64"):
        load_model(path, 'cpu')
