"""The scoring settings a stage uses, resolved by one rule (embedder.resolve_scoring), and the flags it reads."""
import pytest

import cli
import verification
from embedder import resolve_scoring

ASKED = {'enroll_frames': 200, 'test_frames': 200, 'score_norm': 'asnorm', 'cohort': 'speakers', 'cohort_utts': 20,
         'vad': 'no', 'level': 'no'}  # the flags' values: configure.py's where none is given
RECOMMENDS = {'scoring': {'enroll_frames': 0, 'test_frames': 0, 'score_norm': 'asnorm', 'cohort': 'utterances',
                          'cohort_utts': 50}}
PUBLISHED = {**RECOMMENDS, 'cohort': object(), 'cohort_source': {'kind': 'speakers', 'utts_per_speaker': 30}}
ENROLLED = {'speaker': 'spk', 'enroll_frames': 300, 'vad': 'energy', 'level': -44.0}

# (setting, flags given, checkpoint, enrollment) -> (value, source): each source wins over those below it
PRECEDENCE = [
    ('enroll_frames', set(), {}, None, (200, 'configure.py')),
    ('enroll_frames', set(), RECOMMENDS, None, (0, 'checkpoint')),
    ('enroll_frames', {'enroll_frames'}, RECOMMENDS, None, (200, 'flag')),  # a flag wins even at configure's value
    ('enroll_frames', set(), RECOMMENDS, ENROLLED, (300, 'enrollment')),
    ('vad', set(), RECOMMENDS, ENROLLED, ('energy', 'enrollment')),
    ('test_frames', set(), RECOMMENDS, ENROLLED, (0, 'checkpoint')),  # the test side is not the enrollment's
    ('cohort', set(), RECOMMENDS, None, ('utterances', 'checkpoint')),
    ('cohort', {'cohort'}, RECOMMENDS, None, ('speakers', 'flag')),
    ('cohort', {'cohort'}, PUBLISHED, None, ('speakers', 'published cohort')),  # it carries that cohort
    ('cohort_utts', set(), PUBLISHED, None, (30, 'published cohort')),
    ('score_norm', {'score_norm'}, PUBLISHED, None, ('asnorm', 'flag')),
]


@pytest.mark.parametrize('name, given, ckpt, enrollment, expected', PRECEDENCE)
def test_each_scoring_setting_comes_from_the_first_source_that_has_it(name, given, ckpt, enrollment, expected):
    assert resolve_scoring(ASKED, given, ckpt, enrollment)[name] == expected


def test_a_published_cohort_counts_under_asnorm_only():
    cosine = {**ASKED, 'score_norm': 'none'}
    assert resolve_scoring(cosine, {'score_norm', 'cohort'}, PUBLISHED)['cohort'] == ('speakers', 'flag')


def test_a_flag_that_contradicts_the_enrollment_is_refused_and_one_that_agrees_is_not():
    with pytest.raises(ValueError, match='--vad no: spk was enrolled with --enroll-frames 300 --vad energy'):
        resolve_scoring(ASKED, {'vad'}, RECOMMENDS, ENROLLED)
    agreeing = {**ASKED, 'vad': 'energy'}
    assert resolve_scoring(agreeing, {'vad'}, RECOMMENDS, ENROLLED)['vad'] == ('energy', 'enrollment')


@pytest.mark.parametrize('argv, given', [
    ([], set()),
    (['--enroll-frames', '200'], {'enroll_frames'}),  # configure.py's value, given: it counts as given
    (['--vad=energy', '--json', '--trials', 'x.txt'], {'vad', 'json', 'trials'}),
    (['--level'], {'level'}),  # a flag with an optional value
])
def test_the_parser_says_which_settings_the_command_line_gave(argv, given):
    assert verification.parse_args(argv).given == given


def test_a_parser_without_defaults_in_the_given_parse_keeps_its_defaults():
    p = cli.parser('x')
    cli.setting(p, 'ENROLL_FRAMES', type=cli.non_negative_int)
    p.set_defaults(enroll_frames=7)
    args = p.parse_args([])
    assert args.enroll_frames == 7 and args.given == set()
    assert p.parse_args([]).enroll_frames == 7  # the defaults are put back after each parse
