"""Log format: journald gets syslog priorities and no timestamps; a terminal gets both."""

from __future__ import annotations

import logging

import pytest

from bangd.logs import JournalFormatter, setup_logging, under_journald


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("bangd.x", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"),
     (logging.ERROR, "<3>"), (logging.CRITICAL, "<2>")],
)
def test_journal_lines_carry_the_syslog_priority(level: int, prefix: str) -> None:
    text = JournalFormatter("%(name)s: %(message)s").format(record(level, "source=a"))
    assert text == f"{prefix}bangd.x: source=a"


def test_every_line_of_a_multiline_message_gets_the_priority() -> None:
    text = JournalFormatter("%(message)s").format(record(logging.ERROR, "one\ntwo"))
    assert text.splitlines() == ["<3>one", "<3>two"]


def test_journald_is_recognised_by_journal_stream() -> None:
    assert under_journald({"JOURNAL_STREAM": "8:12345"})
    assert not under_journald({})


def test_outside_journald_lines_have_a_timestamp_and_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    setup_logging("info", journal=False)
    try:
        logging.getLogger("bangd.test").warning("source=a state=failed")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert err.rstrip().endswith("WARNING bangd.test: source=a state=failed")
    assert err[:4].isdigit()
