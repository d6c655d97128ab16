"""tools/compare_scores.py: figures of several score files of one trial list, and their DET curves in one plot."""
import pytest

from dvector.trials import Trial, read_scores, write_scores
from tools import compare_scores


def write_rows(path, rows):
    """A score file of (score, label, enroll, test) rows, written here as a user would."""
    path.write_text(''.join(f"{score} {label} {enroll} {test}\n" for score, label, enroll, test in rows))
    return path


TRIALS = [(1, 'a/', 'a/t1.p'), (0, 'b/', 'a/t1.p'), (1, 'b/', 'b/t1.p'), (0, 'a/', 'b/t1.p')]


def scored(scores):
    return [(s, label, enroll, test) for s, (label, enroll, test) in zip(scores, TRIALS, strict=True)]


# The figures worked out by hand. Lowering the threshold past each score in turn (T: target, N: non-target
# trial) gives the operating points (P_fa, P_miss); the EER is where the two meet (the threshold halfway
# between the scores there), minDCF(p) = min over the points of (p * P_miss + (1 - p) * P_fa) / min(p, 1 - p),
# top-1 counts the test files whose best score is a target trial.
#   good:  0.9 T, 0.8 T, 0.2 N, 0.1 N  -> (0, 1) (0, .5) (0, 0) (.5, 0) (1, 0): EER 0 at 0.5; minDCF 0 and 0;
#          top-1 2 of 2
#   bad:   0.95 N, 0.9 T, 0.8 T, 0.2 N -> (0, 1) (.5, 1) (.5, .5) (.5, 0) (1, 0): EER 50 % at 0.85; minDCF 1 and 1
#          (rejecting everything: a false alarm costs 99x or 19x a miss); top-1 1 of 2 (a/t1.p's best is b/'s 0.95)
#   close: 0.9 T, 0.85 N, 0.8 T, 0.2 N -> (0, 1) (0, .5) (.5, .5) (.5, 0) (1, 0): EER 50 % at 0.825;
#          minDCF 0.5 and 0.5 (accepting 0.9 only: half the targets missed, no false alarm); top-1 2 of 2
EXPECTED = {
    'good': {'eer_percent': 0.0, 'eer_threshold': 0.5, 'min_dcf_p0.01': 0.0, 'min_dcf_p0.05': 0.0, 'top1_percent': 100},
    'bad': {'eer_percent': 50.0, 'eer_threshold': 0.85, 'min_dcf_p0.01': 1.0, 'min_dcf_p0.05': 1.0, 'top1_percent': 50},
    'close': {'eer_percent': 50.0, 'eer_threshold': 0.825, 'min_dcf_p0.01': 0.5, 'min_dcf_p0.05': 0.5,
              'top1_percent': 100},
}


def test_each_file_gets_its_figures_and_the_det_plot_is_written(tmp_path, capsys):
    files = [write_rows(tmp_path / f'{name}.txt', scored(scores)) for name, scores in
             (('good', [0.9, 0.1, 0.8, 0.2]), ('bad', [0.9, 0.95, 0.8, 0.2]), ('close', [0.9, 0.85, 0.8, 0.2]))]
    out = tmp_path / 'det.png'
    summaries = compare_scores.main([*map(str, files), '--names', 'good', 'bad', 'close', '--out', str(out)])
    for name, expected in EXPECTED.items():
        assert summaries[name] == {'trials': 4, 'target_trials': 2, 'nontarget_trials': 2, 'top1_test_items': 2,
                                   **{k: pytest.approx(v) for k, v in expected.items()}}, name
    printed = capsys.readouterr().out
    assert '4 trials (2 target, 2 non-target)' in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[2:5]}
    assert rows == {'good': ['0.00', '0.0000', '0.0000', '100.00'], 'bad': ['50.00', '1.0000', '1.0000', '50.00'],
                    'close': ['50.00', '0.5000', '0.5000', '100.00']}
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_score_files_read_back_as_written(tmp_path):
    trials = [Trial(label, enroll, test) for label, enroll, test in TRIALS]
    write_scores(tmp_path / 's.txt', trials, [0.9, -0.25, 0.8, 0.2])
    assert read_scores(tmp_path / 's.txt') == (trials, [0.9, -0.25, 0.8, 0.2])


def test_score_files_of_different_trials_are_refused(tmp_path):
    a = write_rows(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    b = write_rows(tmp_path / 'b.txt', scored([0.9, 0.1, 0.8, 0.2])[:3])
    with pytest.raises(ValueError, match='scores other trials than'):
        compare_scores.main([str(a), str(b), '--out', str(tmp_path / 'det.png')])


@pytest.mark.parametrize('line', ['0.5 1 a/', 'x 1 a/ b.p', '0.5 2 a/ b.p', '0.5 1 a/ b.p extra'])
def test_malformed_score_lines_are_named(tmp_path, line):
    path = tmp_path / 's.txt'
    path.write_text(f"0.1 0 a/ c.p\n{line}\n")
    with pytest.raises(ValueError, match='s.txt, line 2: expected'):
        read_scores(path)


def test_names_must_match_the_files(tmp_path):
    a = write_rows(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    with pytest.raises(ValueError, match='1 score files but 2 names'):
        compare_scores.main([str(a), '--names', 'x', 'y'])


def test_each_file_needs_its_own_name(tmp_path):
    a = write_rows(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    with pytest.raises(ValueError, match='each score file needs its own name'):
        compare_scores.main([str(a), str(a), '--out', str(tmp_path / 'det.png')])


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, monkeypatch):
    scores = write_rows(tmp_path / 's.txt', scored([0.9, 0.1, 0.8, 0.2]))
    monkeypatch.chdir(tmp_path)
    for out in ('s.txt', './s.txt', str(scores)):
        with pytest.raises(ValueError, match=f"{out} is also an input .s.txt.: writing it would lose it"):
            compare_scores.main(['s.txt', '--out', out])
    assert read_scores(scores)[1] == [0.9, 0.1, 0.8, 0.2]
