"""Paths and settings for every stage, in one place.

Edit them here; every entry script also takes flags that override them for one run
(`python train.py --help`). Paths are relative to the folder you run the scripts from.
"""

# ---- Data --------------------------------------------------------------------------------
# Audio trees <dir>/<speaker>/<utterance>.wav (or .flac, .ogg, ...: audio.AUDIO_SUFFIXES) are feature_extraction's
# input; feature trees <dir>/<speaker>/<utterance>.p (pickles of {'feat': (n_frames, FILTER_BANK), 'label': speaker})
# are its output and the other stages' input
TRAIN_WAV_DIR = 'wavs/train'                  # training audio: <speaker>/<utterance>.wav
TEST_WAV_DIR = 'wavs/test'                    # enrollment and test audio: <speaker>/<utterance>.wav
TRAIN_FEAT_DIR = 'feat_logfbank_nfilt40/train'  # training data: features <speaker>/<utterance>.p, or audio
                                                # <speaker>/.../<utterance>.wav (features made as it is read), or a
                                                # list file of `<path> <speaker>` lines, or a Kaldi data folder
                                                # (wav.scp, utt2spk): docs/voxceleb.md
TEST_FEAT_DIR = 'feat_logfbank_nfilt40/test'  # enrollment and test features (or audio): files whose name contains
                                              # 'enroll' enroll a speaker, the others test
# Speakers held out of training to test on
HOLDOUT_DIR = 'feat_holdout'  # tools/holdout.py writes <HOLDOUT_DIR>/train (the others) and <HOLDOUT_DIR>/test
                              # (held out)
HOLDOUT_SPEAKERS = 20         # speakers held out, spread evenly over the sorted speaker list
HOLDOUT_ENROLL_UTTS = 5  # utterances per held-out speaker that enroll it; the others test it

# ---- Features: log Mel-filterbank energies (python_speech_features) -----------------------
SAMPLE_RATE = 16000  # Hz; wavs at other rates are resampled, stereo is downmixed
FILTER_BANK = 40     # Mel filters = feature dimension
WIN_LEN = 0.025      # seconds per analysis window
WIN_STEP = 0.01      # seconds between frames: one frame = 10 ms
TRIM_FRAMES = 50     # frames (0.5 s) cut at each end of every utterance: its leading/trailing silence
MIN_FRAMES = 40      # an utterance must keep more than this many frames after trimming (as the tutorial)
# Front end, wherever audio is read (feature_extraction.py, and audio given to enroll/verification/identification)
VAD = 'no'           # speech detection: 'no' (the tutorial: every frame) | 'energy' (frames more than 30 dB below the
                     # utterance's loud frames are dropped before mean normalisation, then TRIM_FRAMES as ever) |
                     # 'silero' (silero-vad's trained detector keeps the frames it finds speech in, then the same)
LEVEL = 'auto'       # gain before the fbank: 'auto' (speech more than AUTO_LEVEL_DB from the model's training level is
                     # brought to it: lifted to the level its checkpoint records, or TRAIN_LEVEL; turned down only
                     # where the checkpoint records one. The rest, the ETRI recordings among them, is left as it is:
                     # the tutorial's features) | 'no' (the tutorial: never) | a target speech level in dBFS, e.g.
                     # TRAIN_LEVEL (the flag --level alone means TRAIN_LEVEL)
MIN_SPEECH = 1.0     # seconds: where 'silero' finds less speech than this, every frame is used (with a note)
TRAIN_LEVEL = -44.0  # dBFS: speech level of the training recordings (ETRI: median of the 20 test wavs, -47 to -40);
                     # the target of --level given without a value. train.py records the level of its training data
                     # in the checkpoint: measured on audio, as feature_extraction.py's files record it, or this one
                     # for feature files that record none (the published ETRI features)
AUTO_LEVEL_DB = 15.0  # dB below the training level where LEVEL 'auto' starts lifting speech (the ETRI recordings
                      # span -47 to -40 dBFS; telephone pieces read down to -58: tools/robustness.py --dev)
AUTO_LEVEL_ABOVE_DB = 8.0  # dB above it where 'auto' starts turning speech down (only to a level a checkpoint
                           # records): ETRI's dev pieces reach -39 dBFS clean, -36 in the far field, -28 at x4
NUM_WIN_SIZE = 100   # frames (1 s) per random training window
MAX_SECONDS = 600    # longest recording read, in seconds, wherever audio is read: a longer one is refused, and read
                     # no further (a few MB of Opus hold hours, whose features would take GBs)

# ---- Recipe --------------------------------------------------------------------------------
# 'tutorial': the settings below as they stand (the tutorial's values, unless you change them);
# 'improved': the settings named in RECIPES['improved'] replace them (train.py --recipe does the same)
RECIPE = 'tutorial'
RECIPES = {  # keys: train.py's flags
    'tutorial': {},
    'improved': {'pooling': 'asp', 'loss': 'aam', 'margin': 0.3, 'win_size': 200, 'spec_augment': 'yes',
                 'schedule': 'cosine', 'epochs': 20, 'finetune_epochs': 3, 'augment': 'yes',
                 'speed_perturb': 'yes'},
}

# ---- Model ---------------------------------------------------------------------------------
BACKBONE = 'resnet18'  # depth: 'resnet18' | 'resnet34' | 'resnet50' | 'resnet101' | 'resnet152'
BASE_CHANNELS = 16     # width: channels of the first ResNet layer, doubled in each of the next three
EMBEDDING_SIZE = 128   # d-vector dimension
POOLING = 'avg'        # over the backbone's output: 'avg' (global average, the tutorial) | 'asp' (attentive statistics)

# ---- Training (train.py) --------------------------------------------------------------------
LOG_DIR = 'model_saved'  # checkpoint_<epoch>.pth, checkpoint_best.pth, loss_plot.png
VAL_RATIO = 10           # percent of the training utterances held out for validation
EPOCHS = 30              # train up to this epoch
BATCH_SIZE = 64          # training windows per batch
VALID_BATCH_SIZE = 16    # whole utterances, padded by repetition to the longest in the batch
OPTIMIZER = 'sgd'        # 'sgd' (the tutorial) | 'adam' | 'adagrad'
LR = 0.1                 # learning rate: the initial one (plateau), the peak after the warm-up (cosine, exponential)
MOMENTUM = 0.9           # sgd only
WEIGHT_DECAY = 1e-4      # L2 penalty on the weights, in the optimizer
SCHEDULE = 'plateau'     # learning rate: 'plateau' (the tutorial: ReduceLROnPlateau on the validation loss) |
                         # 'cosine' (linear warm-up, then a cosine down to MIN_LR at the last epoch) | 'exponential'
LR_PATIENCE = 2          # plateau: the lr is cut by 10x when the validation loss has not improved for more epochs
                         # than this
MIN_LR = 1e-4            # the lowest lr: plateau's floor, and where cosine and exponential end
WARMUP_EPOCHS = 2        # cosine/exponential: epochs over which the lr rises linearly from ~0 to LR
LOG_INTERVAL = 84        # batches between training log lines
NUM_WORKERS = 0          # DataLoader worker processes (0: load in the main process)
LOSS = 'softmax'         # 'softmax' (the tutorial) | 'am' (additive margin, CosFace) | 'aam' (angular margin, ArcFace)
MARGIN = 0.2             # am/aam: the margin (cosine for am, radians for aam)
SCALE = 30.0             # am/aam: the cosines are multiplied by this before the softmax
MARGIN_WARMUP = 5        # am/aam: epochs over which the margin grows linearly from 0 (0: full margin at once)
SPEC_AUGMENT = 'no'      # 'yes': SpecAugment masks on the training windows (one band and one run of frames set to 0)
FREQ_MASK = 8            # SpecAugment: widest frequency band masked, in filters
TIME_MASK = 10           # SpecAugment: longest run of frames masked
# Augmentation on the features (augment_features.py, docs/augmentation.md): each training window, after it is cut and
# before SpecAugment, is degraded by each kind below with its probability, as if its audio had been; ranges
# (low, high) are drawn uniformly, and SNRs are of the waveforms' powers, as the field quotes them
AUGMENT = 'no'               # 'yes': augment the training windows as below (the tutorial: 'no')
AUG_NOISE_PROB = 0.4         # additive noise: generated white, pink and brown noise and hum, music-like tones a
                             # quarter of the time, and NOISE_DIR's files
AUG_NOISE_SNR = (0, 15)      # dB, noise (Kaldi's range for MUSAN noise)
AUG_MUSIC_SNR = (5, 15)      # dB, music (Kaldi's)
AUG_BABBLE_PROB = 0.2        # babble: other training utterances (or NOISE_DIR's speech/) mixed in
AUG_BABBLE_SNR = (5, 20)     # dB (Kaldi: 13-20; lower here, as tools/robustness.py tests babble at 5 dB)
AUG_BABBLE_VOICES = (3, 7)   # voices in the babble (Kaldi's)
AUG_REVERB_PROB = 0.2        # reverberation: each band's energy smeared by a room (AUG_ROOMS says how)
AUG_ROOMS = 'decay'          # 'decay': on features, a synthetic room's energy decay in expectation (on audio, its
                             # impulse response, or RIR_DIR's) | 'drawn': an impulse response drawn each time, with
                             # early reflections (or one of RIR_DIR's), on features through its energy response at
                             # each 10-ms step (augment_features.band_response)
AUG_RT60 = (0.2, 0.8)        # s, the room's reverberation time (60 dB of decay)
AUG_DRR = (0, 10)            # dB, direct-to-reverberant energy ratio
AUG_CHANNEL_PROB = 0.2       # channel: a telephone line or a microphone's colour
AUG_TELEPHONE_SHARE = 0.5    # of the channel degradations, the share that are a telephone band (300-3400 Hz,
                             # nothing above 4 kHz); the rest a low-bitrate codec or a smooth random EQ
AUG_CODEC_SHARE = 0.0        # of the channel degradations, the share that are a low-bitrate codec (Opus at about
                             # 6 kbit/s; on the features, its measured gain per band); 0: none (not yet measured
                             # in a training run)
AUG_EQ_DB = 6.0              # random EQ: the largest gain or cut, in dB
AUG_GAIN_PROB = 0.2          # level: a gain on the recording, which quiet speech meets the floor (1e-5) with
AUG_GAIN_DB = (-35, 10)      # dB of amplitude (x0.05 is -26 dB)
AUG_PAUSE_PROB = 0.15        # pauses: a stretch of room tone (up to half the window) inserted
AUG_PAUSE_DBFS = (-80, -55)  # dBFS, the room tone's level (ETRI speech is near -44 dBFS)
NOISE_DIR = ''               # optional folder of noise audio (MUSAN's layout: music/ and speech/ are music and
                             # babble, the rest noise); on features, made into filterbank energies once at the start
RIR_DIR = ''                 # optional folder of room impulse responses (RIRS_NOISES' files): training from audio,
                             # or on features with AUG_ROOMS 'drawn'; without it, synthetic rooms of AUG_RT60, AUG_DRR
SPEED_PERTURB = 'no'         # 'yes': each training window at speed 0.9, 1 or 1.1 (equally likely), each speed's
                             # windows a speaker of their own (3x the classes, as WeSpeaker does)
SPEEDS = (0.9, 1.1)          # speed perturbation's speeds besides 1
# Large-margin fine-tuning: epochs after EPOCHS that go on from the best of them with longer windows, the full
# margin at once and a small learning rate (WeSpeaker's last stage). Checkpoints number on (EPOCHS + 1, ...), and
# checkpoint_best.pth is then the best fine-tuning epoch
FINETUNE_EPOCHS = 0      # epochs of large-margin fine-tuning after EPOCHS (0: none, the tutorial)
FINETUNE_LR = 0.001      # fine-tuning: the lr at its start, cosine-decayed to MIN_LR at its last epoch (no warm-up)
FINETUNE_WIN_SIZE = 300  # fine-tuning: frames per training window
FINETUNE_MARGIN = 0.5    # fine-tuning, am/aam: the margin, from the first fine-tuning step
# Speed. The tutorial's recipe exactly: PRECISION = 'fp32', CHANNELS_LAST = 'no' (PRELOAD changes nothing learned)
PRECISION = 'auto'       # autocast: 'auto' (bfloat16 on CPUs with bfloat16 units and on recent GPUs, float16 on
                         # older GPUs, else float32) | 'fp32' | 'bf16' | 'fp16' (CUDA)
CHANNELS_LAST = 'auto'   # channels-last memory format for the convolutions: 'auto' (on the CPU) | 'yes' | 'no'
PRELOAD = 'auto'         # features in memory as float32: 'auto' (when they fit in half the free memory) | 'yes' | 'no'
FBANK = 'python_speech_features'  # training from audio, whose fbank makes each item's features: the tutorial's
                         # 'python_speech_features' | 'torch' (the same fbank in torch on the CPU: equal to 1e-12 dB,
                         # faster in DataLoader workers; docs/voxceleb.md)
SEED = 0                 # seeds the train/validation split, the initial weights and the windows
DEVICE = 'auto'          # 'auto' (CUDA when there is a GPU) | 'cpu' | 'cuda'

# ---- Enrollment and testing (enroll.py, verification.py, identification.py) -----------------
CHECKPOINT = 'model_saved/checkpoint_best.pth'  # the model that makes the d-vectors (train.py writes it)
EMBEDDING_DIR = 'enroll_embeddings'              # enrolled d-vectors, <speaker>.pth
ENROLL_FRAMES = 200  # frames per segment when embedding enrollment utterances (0: the whole utterance in one pass)
TEST_FRAMES = 100    # frames per segment when embedding test utterances (0: the whole utterance in one pass)
SCORE_NORM = 'none'  # 'none' (the tutorial: the cosine score) | 'asnorm' (adaptive symmetric normalisation against a
                     # cohort of training d-vectors, kept beside or inside the checkpoint)
COHORT = 'speakers'  # asnorm: the cohort is 'speakers' (one mean d-vector per training speaker) | 'utterances' (the
                     # d-vector of each of their cohort utterances)
COHORT_UTTS = 20     # asnorm: training utterances per speaker in the cohort
COHORT_TOP = 100     # asnorm: each side is normalised by its this many highest cohort scores
# Scoring settings a recipe's checkpoints recommend: train.py records them in each checkpoint, and the
# stages use them for that model in place of the settings above (a flag given on the command line still wins);
# the front end (vad, level) too, as measured on degraded recordings (docs/results.md, Robustness)
SCORINGS = {
    'tutorial': {},
    'improved': {'enroll_frames': 0, 'test_frames': 0, 'score_norm': 'asnorm', 'cohort': 'utterances',
                 'cohort_utts': 50, 'cohort_top': 500, 'vad': 'no', 'level': 'auto'},
}
EMBED_PRECISION = 'auto'  # the backbone's precision when embedding: 'auto' (bfloat16 where the device has bfloat16
                          # units; scores move by ~0.002, see docs/speed.md) | 'fp32' (the tutorial's d-vectors)
                          # | 'bf16'
EMBED_BACKEND = 'auto'    # what runs the embedding network: 'auto' ('onnx' where the embedding is float32 on the
                          # CPU and onnxruntime is installed, else 'torch'; a failed export falls back to 'torch', with
                          # a note) | 'torch' (the tutorial's) | 'onnx' (ONNX Runtime on the CPU, float32 only: the
                          # tutorial's d-vectors, 2x PyTorch's float32 on a CPU without bfloat16 units; exported
                          # once to <checkpoint stem>.<hash>.onnx beside the checkpoint)
THRESHOLD = 0.95     # verification accepts above this cosine score, unless a calibrated threshold is stored
TRIALS = 'trials/trials.txt'  # make_trials.py writes the trial list of TEST_FEAT_DIR here
RESULTS_DIR = 'results'       # scores, DET curves, score histograms, confusion matrices
ENROLL_SPEAKER = '230M4087'  # verification: the enrolled speaker whose identity is claimed
TEST_SPEAKER = '230M4087'    # verification, identification: the speaker whose test.p is scored

# ---- d-vector map (plot_dvectors.py): the test d-vectors drawn in 2-D, one colour per speaker -------
DVECTOR_MAP = f'{RESULTS_DIR}/dvector_map.png'  # the PNG plot_dvectors.py writes
MAP_METHOD = 'tsne'   # 'tsne' (t-SNE: keeps neighbourhoods, the usual picture; seconds for thousands of points) |
                      # 'pca' (the two directions of largest variance: linear, quick, distances comparable)
MAP_PERPLEXITY = 30   # t-SNE: about how many neighbours each point weighs (lowered to a third of the points when fewer)

# ---- Try it in the browser (app.py): a local page that enrolls, verifies and identifies from the microphone ------
APP_CHECKPOINT = 'pretrained/dvector_etri200_improved.pth'  # the model the page uses (the published one)
APP_EMBEDDING_DIR = 'app_enrolled'  # the page's enrolled d-vectors, <name>.pth as enroll.py writes them, and the
                                    # recordings that enrolled them, recordings/<name>/enroll_*.wav
APP_HOST = '127.0.0.1'  # address the page is served on: this machine only. Another ('0.0.0.0': every network) lets
                        # anyone who reaches it enroll and test voices, with no password
APP_PORT = 8000         # port the page is served on (0: any free one); the page's address is printed
APP_MAX_UPLOAD_MB = 20  # largest upload the page takes at once, in MB (a minute of the page's 48-kHz wav: 5.8 MB)
APP_VAD = 'silero'      # speech detection of the page's recordings, as VAD: 'silero' drops a microphone's pauses
APP_LEVEL = TRAIN_LEVEL  # gain of the page's recordings, as LEVEL: brings a microphone's level to the training one

# ---- Demo (demo.py): the whole pipeline on synthetic voices, everything under DEMO_DIR ---------
DEMO_DIR = 'demo'         # everything the demo writes: audio, features, model, results
DEMO_TRAIN_SPEAKERS = 30  # synthetic training voices
DEMO_TRAIN_UTTS = 20      # per training voice
DEMO_TEST_SPEAKERS = 10   # enrolled and tested, never seen in training
DEMO_EPOCHS = 9           # training epochs of the demo model
DEMO_BASE_CHANNELS = 8    # the demo model's width: the tutorial's ResNet at half its BASE_CHANNELS, which 30 voices
                          # need no more than, trains in half the time
DEMO_FROM_AUDIO = 'no'    # 'yes': train on the demo's wavs themselves, their features made as they are read
                          # (docs/voxceleb.md), into DEMO_DIR/model_saved_from_audio; 'no': on features extracted first
DEMO_BATCH_SIZE = 16      # training windows per batch in the demo: more steps in its few epochs
DEMO_OPTIMIZER = 'adam'   # on a small corpus and few epochs Adam converges where SGD at lr 0.1 does not
DEMO_LR = 0.002           # the demo's Adam learning rate
DEMO_BACKEND = 'torch'    # what embeds the demo's 20 test recordings: PyTorch, as exporting the new model to ONNX
                          # (EMBED_BACKEND 'auto' on a CPU without bfloat16 units) takes longer than embedding them
DEMO_MAP_SEGMENTS = 200   # frames (2 s) per point of the demo's d-vector map: each test voice has one test.wav
