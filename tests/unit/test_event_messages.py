"""Event messages fit the API server's 1024-byte limit, cut between UTF-8 characters.

A real server refuses an event with `eventTime` whose message is over 1024 bytes (kopf sets
`eventTime`), and the event is then lost; a multibyte value (a banner in Japanese) in an
`ActionApplied` message is the case that cutting by characters got wrong.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stampede.handlers.operator import EVENT_MESSAGE_BYTES, fit_event_message


def test_a_japanese_message_over_1024_bytes_is_cut_to_at_most_1024_bytes_of_valid_utf8() -> None:
    message = "ConfigMap web/banner: text '" + "メンテナンス中です。" * 60 + "'"
    assert len(message) < 1000 < len(message.encode("utf-8"))  # the old 1000-character cut let it through
    cut = fit_event_message(message)
    assert len(cut.encode("utf-8")) <= EVENT_MESSAGE_BYTES
    assert message.startswith(cut)
    assert len(cut.encode("utf-8")) > EVENT_MESSAGE_BYTES - 4  # only the partial last character is dropped


def test_a_message_that_fits_is_left_alone() -> None:
    message = "é" * 512
    assert fit_event_message(message) == message


@given(st.text(max_size=1500))
def test_every_cut_is_a_prefix_that_fits_and_decodes(message: str) -> None:
    cut = fit_event_message(message)
    encoded = cut.encode("utf-8")
    assert len(encoded) <= EVENT_MESSAGE_BYTES
    assert message.startswith(cut)
    if cut != message:  # nothing a whole further character could have used was given away
        assert len(encoded) + len(message[len(cut)].encode("utf-8")) > EVENT_MESSAGE_BYTES
