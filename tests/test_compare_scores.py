"""compare_scores.py: figures of several score files of one trial list, and their DET curves in one plot."""
import pytest

import compare_scores
from verification import summarize


def write_scores(path, rows):
    path.write_text(''.join(f"{score} {label} {enroll} {test}\n" for score, label, enroll, test in rows))
    return path


TRIALS = [(1, 'a/', 'a/t1.p'), (0, 'b/', 'a/t1.p'), (1, 'b/', 'b/t1.p'), (0, 'a/', 'b/t1.p')]


def scored(scores):
    return [(s, label, enroll, test) for s, (label, enroll, test) in zip(scores, TRIALS, strict=True)]


def test_each_file_gets_the_figures_verification_gives_it(tmp_path, capsys):
    perfect = write_scores(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    mixed = write_scores(tmp_path / 'b.txt', scored([0.9, 0.95, 0.8, 0.2]))  # a's test scores higher against b
    out = tmp_path / 'det.png'
    summaries = compare_scores.main([str(perfect), str(mixed), '--names', 'good', 'bad', '--out', str(out)])
    assert summaries['good']['eer_percent'] == 0 and summaries['good']['top1_percent'] == 100
    assert summaries['bad']['top1_percent'] == 50 and summaries['bad']['eer_percent'] > 0
    trials, scores = compare_scores.read_scores(mixed)
    assert summaries['bad'] == summarize(trials, scores)
    printed = capsys.readouterr().out
    assert '4 trials (2 target, 2 non-target)' in printed and 'good' in printed and 'bad' in printed
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_score_files_of_different_trials_are_refused(tmp_path):
    a = write_scores(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    b = write_scores(tmp_path / 'b.txt', scored([0.9, 0.1, 0.8, 0.2])[:3])
    with pytest.raises(ValueError, match='scores other trials than'):
        compare_scores.main([str(a), str(b), '--out', str(tmp_path / 'det.png')])


@pytest.mark.parametrize('line', ['0.5 1 a/', 'x 1 a/ b.p', '0.5 2 a/ b.p', '0.5 1 a/ b.p extra'])
def test_malformed_score_lines_are_named(tmp_path, line):
    path = tmp_path / 's.txt'
    path.write_text(f"0.1 0 a/ c.p\n{line}\n")
    with pytest.raises(ValueError, match='s.txt, line 2: expected'):
        compare_scores.read_scores(path)


def test_names_must_match_the_files(tmp_path):
    a = write_scores(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    with pytest.raises(ValueError, match='1 score files but 2 names'):
        compare_scores.main([str(a), '--names', 'x', 'y'])


def test_each_file_needs_its_own_name(tmp_path):
    a = write_scores(tmp_path / 'a.txt', scored([0.9, 0.1, 0.8, 0.2]))
    with pytest.raises(ValueError, match='each score file needs its own name'):
        compare_scores.main([str(a), str(a), '--out', str(tmp_path / 'det.png')])
