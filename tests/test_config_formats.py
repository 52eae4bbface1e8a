"""Config keys of feed formats, authenticated sources and max_drop: values and problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangd.config import FORMATS, WHITESPACE, HttpHeaders, SourceConfig, parse_config
from bangd.errors import ConfigError


def one_source(extra: str) -> str:
    body = "".join(f"    {line}\n" for line in extra.strip().splitlines())
    return f"sources:\n  - name: s\n    url: https://lists.example/x\n    interval: 1h\n{body}"


def problems_of(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(one_source(extra), "bangd.yaml")
    return info.value.problems


def source_of(extra: str) -> SourceConfig:
    return parse_config(one_source(extra), "bangd.yaml").sources[0]


def test_format_defaults_to_text() -> None:
    assert source_of("enabled: true").format == FORMATS["text"]


@pytest.mark.parametrize("name", sorted(set(FORMATS) - {"columns", "json"}))
def test_every_named_format_is_accepted(name: str) -> None:
    assert source_of(f"format: {name}").format.name == name


def test_an_unknown_format_lists_the_known_ones() -> None:
    (problem,) = problems_of("format: dshild")
    assert problem.startswith("bangd.yaml: sources[0].format: unknown format 'dshild'; "
                              "did you mean dshield? known formats: text, ranges, ")


def test_min_score_overrides_the_formats_default() -> None:
    assert source_of("format: ipsum\nmin_score: 3").format.min_score == 3
    assert source_of("format: ipsum").format.min_score == 1
    assert source_of("format: abuseipdb-csv").format.min_score == 0


def test_min_score_on_a_format_without_a_score_is_a_problem() -> None:
    assert problems_of("format: dshield\nmin_score: 3") == [
        "bangd.yaml: sources[0].min_score: format dshield has no score to compare"
    ]


def test_columns_reader_takes_its_options() -> None:
    fmt = source_of("format: columns\ndelimiter: tab\ncolumn: ip\nscore_column: 3\n"
                    "min_score: 2\nrecord: deny").format
    assert (fmt.reader, fmt.delimiter, fmt.column, fmt.score_column, fmt.min_score,
            fmt.record, fmt.header) == ("columns", "\t", "ip", 3, 2, "deny", True)


def test_columns_delimiter_may_be_whitespace() -> None:
    assert source_of("format: columns\ndelimiter: whitespace\ncolumn: 2").format.delimiter == (
        WHITESPACE
    )


def test_columns_without_a_column_is_a_problem() -> None:
    (problem,) = problems_of("format: columns")
    assert problem.startswith("bangd.yaml: sources[0].column: missing; format: columns needs")


def test_json_reader_takes_a_field() -> None:
    assert source_of("format: json\nfield: data.ip").format.field == "data.ip"


def test_a_reader_option_with_another_format_is_a_problem() -> None:
    assert problems_of("format: ipsum\ndelimiter: ','") == [
        "bangd.yaml: sources[0].delimiter: only for format: columns (format ipsum sets its own)"
    ]


def test_misspelt_new_keys_get_did_you_mean() -> None:
    (problem,) = problems_of("fromat: dshield")
    assert problem == "bangd.yaml: sources[0].fromat: unknown key; did you mean format?"


@pytest.mark.parametrize(("text", "share"), [("50%", 0.5), ("0.25", 0.25), ("100%", 1.0)])
def test_max_drop_is_a_share(text: str, share: float) -> None:
    assert source_of(f"max_drop: {text}").max_drop == share


@pytest.mark.parametrize("text", ["0%", "150%", "2", "half", "0"])
def test_max_drop_out_of_range_is_a_problem(text: str) -> None:
    (problem,) = problems_of(f"max_drop: {text}")
    assert "sources[0].max_drop: expected a share such as 50% or 0.5" in problem


def test_max_drop_defaults_to_no_limit() -> None:
    assert source_of("enabled: true").max_drop is None


def test_header_values_are_expanded_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABUSEIPDB_KEY", "s3cret")
    headers = source_of("headers:\n  Key: ${ABUSEIPDB_KEY}\n  Accept: text/plain").headers
    assert headers.items() == (("Key", "s3cret"), ("Accept", "text/plain"))


def test_a_missing_environment_variable_is_a_problem_naming_source_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    assert problems_of("headers:\n  Key: ${NO_SUCH_KEY}") == [
        "bangd.yaml: sources[0].headers.Key: environment variable NO_SUCH_KEY is not set"
    ]


def test_headers_file_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_text("# keys\n\nKey: abc:def\nX-Token:  t1 \n")
    headers = source_of(f"headers_file: {path}").headers
    assert headers.items() == (("Key", "abc:def"), ("X-Token", "t1"))


def test_an_unreadable_headers_file_is_one_problem(tmp_path: Path) -> None:
    assert problems_of(f"headers_file: {tmp_path / 'missing'}") == [
        f"bangd.yaml: sources[0].headers_file: cannot read {tmp_path / 'missing'}: "
        "No such file or directory"
    ]


def test_a_bad_headers_file_line_names_the_line_but_not_its_text(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_text("Key: fine\nthis-is-the-secret-without-colon\n")
    (problem,) = problems_of(f"headers_file: {path}")
    assert problem == f"bangd.yaml: sources[0].headers_file: {path} line 2: expected Name: value"


def test_a_header_value_with_a_line_break_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVIL", "x\r\nHost: other")
    (problem,) = problems_of("headers:\n  Key: ${EVIL}")
    assert "line break" in problem and "other" not in problem


def test_header_values_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABUSEIPDB_KEY", "s3cret")
    src = source_of("headers:\n  Key: ${ABUSEIPDB_KEY}")
    assert "s3cret" not in repr(src) and "s3cret" not in str(src.headers)
    assert repr(src.headers) == "HttpHeaders(Key=<hidden>)"


def test_headers_compare_by_value_for_reloads() -> None:
    assert HttpHeaders((("Key", "a"),)) == HttpHeaders((("Key", "a"),))
    assert HttpHeaders((("Key", "a"),)) != HttpHeaders((("Key", "b"),))
