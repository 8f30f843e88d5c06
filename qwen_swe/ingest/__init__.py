"""Long recordings in, aligned clips out (`qwen-swe ingest`): audiobooks, speeches and lectures become the 2-15 s
clips with exact transcripts that `qwen-swe shards build --manifest` takes.

Rooms: decode (streaming decode to 24 kHz PCM on disk), transcript (normalised sentences and words), espeak
(rendering with word times), features (MFCCs, levels), pauses (level + silero VAD), dtw (slope-bounded subsequence
DTW), align (the offline aligner), ctc (forced alignment with a user's CTC model folder), whisper (timestamps from a
user's Whisper folder, for recordings without a transcript), segment (clips cut in pauses, confidence), report,
pipeline (resumable per recording; the outputs); synthetic (espeak-ng + sox recordings with known pauses, for
tests and the benchmark).
"""
