"""The ASCII fast paths of SASL's PRECIS preparation yield exactly what the profiles yield."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.stream.sasl.precis import OPAQUE, USERNAME, prepare_password, prepare_username

ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=24)
any_text = st.text(max_size=12)


def _outcome(prepare: object, text: str) -> str | type[BaseException]:
    try:
        return prepare(text)  # type: ignore[operator,no-any-return]
    except UnicodeError as e:
        return type(e)


@settings(deadline=None, max_examples=500)
@given(st.one_of(ascii_text, any_text))
def test_username_fast_path_agrees_with_the_profile(text: str) -> None:
    assert _outcome(prepare_username, text) == _outcome(USERNAME.enforce, text)


@settings(deadline=None, max_examples=500)
@given(st.one_of(ascii_text, any_text))
def test_password_fast_path_agrees_with_the_profile(text: str) -> None:
    assert _outcome(prepare_password, text) == _outcome(OPAQUE.enforce, text)


@pytest.mark.parametrize(
    "name,prepared",
    [("Juliet", "juliet"), ("user17", "user17"), ("a.b_c-d!~", "a.b_c-d!~"), ("ＪＵＬＩＥＴ", "juliet")],
)
def test_usernames(name: str, prepared: str) -> None:
    assert prepare_username(name) == prepared


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "\x00"])
def test_refused_usernames(name: str) -> None:
    with pytest.raises(UnicodeError):
        prepare_username(name)


def test_passwords_keep_case_and_spaces_and_refuse_empty() -> None:
    assert prepare_password("Pass Word!") == "Pass Word!"
    with pytest.raises(UnicodeError):
        prepare_password("")
