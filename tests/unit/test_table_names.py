"""Table names go into SQL text unquoted: only plain identifiers, never a reserved word."""

from __future__ import annotations

import pytest

from gip_airflow.transfers._sql import check_table_name


@pytest.mark.parametrize(
    "name", ["results", "gip_trace_results", "analytics.results", "_x9", "x" * 58, "Select_results"]
)
def test_plain_names_pass(name):
    assert check_table_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "results\n",
        "results\r\n",
        "analytics.results\n",
        "results; DROP TABLE x",
        "a.b.c",
        "1abc",
        "",
        "x" * 59,
    ],
)
def test_malformed_names_are_refused(name):
    with pytest.raises(
        ValueError, match=r"is not a plain \[schema\.\]table name: letters, digits and _ only"
    ):
        check_table_name(name)


@pytest.mark.parametrize("name", ["select", "TABLE", "user", "order", "analytics.group", "from.results"])
def test_reserved_words_are_refused_with_a_suggestion(name):
    with pytest.raises(
        ValueError, match=r"is an SQL reserved word; choose another name, e\.g\. '\w+_results'"
    ):
        check_table_name(name)


def test_the_field_is_named():
    with pytest.raises(ValueError, match=r"^summary_table 'where'"):
        check_table_name("where", "summary_table")
