"""The one byte-size parser of the command line: binary units, case-insensitive, decimals, bare bytes."""

from __future__ import annotations

import pytest

from qwen_swe.units import GIB, KIB, MIB, TIB, parse_bytes


@pytest.mark.parametrize("text, expected", [
    ("32GB", 32 * 2**30), ("32GiB", 32 * 2**30), ("32G", 32 * 2**30),
    ("256MB", 256 * 2**20), ("256MiB", 256 * 2**20), ("256M", 256 * 2**20),
    ("4KB", 4096), ("4KiB", 4096), ("4k", 4096),
    ("2TB", 2 * 2**40), ("2TiB", 2 * 2**40), ("2t", 2 * 2**40),
])
def test_units_are_binary_with_or_without_b_or_ib(text, expected):
    assert parse_bytes(text) == expected
    assert isinstance(parse_bytes(text), int)


def test_constants_are_powers_of_1024():
    assert (KIB, MIB, GIB, TIB) == (1024, 1024**2, 1024**3, 1024**4)


@pytest.mark.parametrize("text", ["32gb", "32Gb", "32gB", "32GIB", "32gib", "32 GB", " 32GB ", "32g"])
def test_case_and_spaces_do_not_matter(text):
    assert parse_bytes(text) == 32 * 2**30


def test_a_bare_number_is_bytes():
    assert parse_bytes("1000000") == 10**6
    assert parse_bytes("123B") == 123
    assert parse_bytes("0") == 0  # shards build: no size cap


def test_decimals_round_down_to_whole_bytes():
    assert parse_bytes("1.5GB") == 3 * 2**29
    assert parse_bytes("0.5MiB") == 2**19
    assert parse_bytes(".25K") == 256
    assert parse_bytes("1.0001K") == 1024  # 1024.1024 bytes
    assert parse_bytes("1e3") == 1000


@pytest.mark.parametrize("text", ["", "GB", "abc", "-1GB", "1.2.3G", "12XB", "5ib", "5 kk", "nan", "inf", "1e999",
                                  "1,5GB", "32 GB extra"])
def test_bad_input_is_refused_naming_the_option_and_an_example(text):
    with pytest.raises(ValueError) as error:
        parse_bytes(text, "--gpu-memory")
    message = str(error.value)
    assert message.startswith("--gpu-memory: ") and repr(text) in message
    assert "e.g. 32GB" in message


def test_without_an_option_the_message_starts_with_the_value():
    with pytest.raises(ValueError, match=r"^'12XB' is not a size"):
        parse_bytes("12XB")
