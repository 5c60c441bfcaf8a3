"""Strict JSON types for API input serializers.

DRF coerces on input: `"count": "2"` becomes 2 and `"prompt": 42` becomes "42". The published
schema says integer and string, and the SDKs send those, so a value of another JSON type is a
client bug to report, not to guess around: `StrictTypesSerializer` checks each supplied value's
JSON type against its field before DRF converts it (nested dict and list children included).
"""

from __future__ import annotations

from rest_framework import serializers


def _expected(field: serializers.Field) -> tuple[tuple[type, ...], str] | None:
    """(accepted Python types after JSON parsing, what to tell the client), None: any."""
    if isinstance(field, serializers.BooleanField):
        return (bool,), "a boolean"
    if isinstance(field, serializers.IntegerField):
        return (int,), "an integer"
    if isinstance(field, serializers.DecimalField):
        # A decimal is exact only as a string, and that is how the schema publishes it (DRF renders
        # decimals as strings); a JSON number is accepted too.
        return (int, float, str), "a number or a decimal string"
    if isinstance(field, serializers.FloatField):
        return (int, float), "a number"
    if isinstance(field, serializers.CharField | serializers.ChoiceField):  # Regex, URL, Email, Choice...
        return (str,), "a string"
    if isinstance(field, serializers.DictField):
        return (dict,), "an object"
    if isinstance(field, serializers.ListField):
        return (list,), "an array"
    return None


def json_type_errors(field: serializers.Field, value: object):
    """The first type error for `value` as a ValidationError detail (nested like DRF's), or None."""
    if value is None:
        return None  # the field's own allow_null decides
    expected = _expected(field)
    if expected is None:
        return None
    types, label = expected
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return [f"Must be {label}, not {_json_type(value)}."]
    child = getattr(field, "child", None)
    if child is not None and isinstance(value, dict):
        for key, item in value.items():
            detail = json_type_errors(child, item)
            if detail is not None:
                return {key: detail}
    if child is not None and isinstance(value, list):
        for index, item in enumerate(value):
            detail = json_type_errors(child, item)
            if detail is not None:
                return {index: detail}
    return None


def _json_type(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "an object"}.get(
        type(value), "an array" if isinstance(value, list) else type(value).__name__
    )


class StrictTypesSerializer(serializers.Serializer):
    """A Serializer whose supplied values must already have their field's JSON type."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            for name, field in self.fields.items():
                if name in data and not field.read_only:
                    detail = json_type_errors(field, data[name])
                    if detail is not None:
                        raise serializers.ValidationError({name: detail})
        return super().to_internal_value(data)
