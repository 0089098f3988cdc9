"""Serializer fields that take JSON types as the OpenAPI document states them.

DRF's CharField turns a number into a string and IntegerField a string into a
number; a body that sends `"reason": 5` or `"expectedPlanVersion": "3"` does
not match the schema and gets the 422 every other schema violation gets.
"""
from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Expected a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Expected an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
