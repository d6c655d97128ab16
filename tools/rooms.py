"""The synthetic rooms of the evaluation tools: robustness.py reverberates test recordings in them, and
augment_check.py compares augmentation on features with its reverberant room.
"""
ROOM_RT60, ROOM_DRR_DB = 0.5, 3.0  # the reverberant room: reverberation time (s), direct-to-reverberant ratio (dB)
FAR_RT60, FAR_DRR_DB, FAR_SNR_DB = 0.6, -3.0, 15  # far field: a talker across a room, its reverberation
                                                 # louder than the direct sound, and pink noise
