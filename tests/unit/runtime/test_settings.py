"""The runtime's settings file: defaults, and errors that name the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.settings import RuntimeSettings, SettingsError, load_settings, parse_settings


def test_defaults() -> None:
    s = RuntimeSettings()
    assert (s.controller.min_lookahead, s.controller.max_lookahead) == (0, 8)
    assert s.controller.confidence_threshold == 0.2
    assert s.controller.exploration == 0.03
    assert s.adaptive.enabled is True
    assert s.adaptive.learning_rate == 0.002
    assert (s.adaptive.steps_per_request, s.adaptive.buffer_size, s.adaptive.batch_size) == (4, 64, 4)
    assert s.adaptive.compute_share == 0.25
    assert s.capture.enabled is False
    assert s.capture.sample_rate == 0.05
    assert s.capture.retention == "168h"


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_is_the_defaults(text: str) -> None:
    assert parse_settings(text) == RuntimeSettings()


def test_no_path_is_the_defaults() -> None:
    assert load_settings("") == RuntimeSettings()


def test_camel_case_keys_are_read(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "controller:\n  minLookahead: 2\n  maxLookahead: 4\n"
        "adaptive:\n  stepsPerRequest: 7\n  enabled: false\n"
        "capture:\n  sampleRate: 0\n  retention: 1h30m\n"
    )
    s = load_settings(str(f))
    assert (s.controller.min_lookahead, s.controller.max_lookahead) == (2, 4)
    assert s.controller.confidence_threshold == 0.2  # untouched keys keep their defaults
    assert (s.adaptive.steps_per_request, s.adaptive.enabled) == (7, False)
    assert (s.capture.sample_rate, s.capture.retention) == (0, "1h30m")


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(SettingsError, match=r"^c\.yaml: speculators: Extra inputs are not permitted"):
        parse_settings("speculators: 3\n", "c.yaml")


def test_unknown_nested_key_is_named_with_its_path() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings("controller:\n  lookahead: 3\n", "c.yaml")
    assert "controller.lookahead" in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_snake_case_key_is_not_the_file_format_but_is_accepted() -> None:
    # populate_by_name: the field's own name works too (the operator writes camelCase).
    assert parse_settings("controller:\n  max_lookahead: 5\n").controller.max_lookahead == 5


def test_bad_value_is_named_with_key_path_and_value() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings("controller:\n  maxLookahead: 100\n", "c.yaml")
    msg = str(info.value)
    assert msg.startswith("c.yaml: controller.maxLookahead: ")
    assert "less than or equal to 64" in msg
    assert "(got 100)" in msg


def test_bad_type_is_named_with_key_path_and_value() -> None:
    with pytest.raises(SettingsError, match=r"adaptive\.learningRate: .*\(got 'fast'\)"):
        parse_settings("adaptive:\n  learningRate: fast\n")


def test_bad_duration_is_named() -> None:
    with pytest.raises(SettingsError, match=r"capture\.retention: .*\(got '7 days'\)"):
        parse_settings("capture:\n  retention: 7 days\n")


def test_min_lookahead_over_max_lookahead() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings("controller:\n  minLookahead: 5\n  maxLookahead: 3\n", "c.yaml")
    assert str(info.value) == "c.yaml: controller.minLookahead (5) exceeds maxLookahead (3)"


def test_min_lookahead_equal_to_max_lookahead_is_fine() -> None:
    s = parse_settings("controller:\n  minLookahead: 3\n  maxLookahead: 3\n")
    assert s.controller.min_lookahead == s.controller.max_lookahead == 3


def test_invalid_yaml() -> None:
    with pytest.raises(SettingsError, match=r"^c\.yaml: not valid YAML: "):
        parse_settings("controller: [unclosed\n", "c.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SettingsError, match="expected a mapping at the top level, got list"):
        parse_settings("- controller\n")


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError, match=r"^--controller-config '.*nope\.yaml': No such file"):
        load_settings(str(missing))


def test_settings_are_frozen() -> None:
    s = RuntimeSettings()
    with pytest.raises(ValueError, match="frozen"):
        s.controller.max_lookahead = 3  # type: ignore[misc]
