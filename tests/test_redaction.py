"""What an error may quote of an answer (``redaction``)."""

from __future__ import annotations

from airflow_provider_wdata import redaction


def test_excerpt_hides_plain_quote_plus_and_quote_forms():
    secret = "a b+c/d"
    body = b"plain=a b+c/d plus=a+b%2Bc%2Fd quoted=a%20b%2Bc%2Fd"
    assert redaction.excerpt(body, hide=(secret,)) == "plain=*** plus=*** quoted=***"


def test_excerpt_is_short_single_line_and_says_when_empty():
    assert redaction.excerpt(b"") == "(empty body)"
    assert redaction.excerpt(b" \n\t ") == "(empty body)"
    assert redaction.excerpt(b"a\n\nb   c") == "a b c"
    long = redaction.excerpt(b"x" * 5000)
    assert long == "x" * redaction.EXCERPT_CHARS + "..."
    assert redaction.excerpt(b"y" * redaction.EXCERPT_CHARS) == "y" * redaction.EXCERPT_CHARS
    assert redaction.excerpt(b"\xff ok") == "\ufffd ok"
    assert redaction.excerpt(b"abc", hide=("",)) == "abc", "an empty secret hides nothing"


def test_a_secret_cut_where_the_quote_ends_shows_no_part_of_it_even_when_not_ascii():
    secret = "sécrét/ü"
    for padding in range(770, 820):
        quoted = redaction.excerpt(b" " * padding + secret.encode() + b" tail", hide=(secret,))
        assert not any(part in quoted for part in ("sé", "rét", "ü")), (padding, quoted)
    assert redaction.excerpt(b" " * 805 + b"END", hide=(secret,)) == "END", "a body read whole keeps its end"
