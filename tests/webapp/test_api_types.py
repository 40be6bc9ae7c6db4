"""The browser's REST types (frontend/src/lib/schema.gen.ts) are generated from the OpenAPI schema;
a serializer change that is not followed by `make api-types` fails here."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from annotator.management.commands.api_types import TARGET


def test_committed_api_types_match_the_current_schema(capsys):
    call_command("api_types", "--check")
    assert "up to date" in capsys.readouterr().out


def test_check_fails_on_types_a_schema_change_left_behind(tmp_path):
    stale = tmp_path / "schema.gen.ts"
    # As if a serializer had gained a field since the file was generated.
    stale.write_text(TARGET.read_text().replace("readonly guidelines: string;", "", 1))
    with pytest.raises(CommandError, match="stale against the OpenAPI schema: run `make api-types`"):
        call_command("api_types", "--check", "--file", str(stale))
    call_command("api_types", "--file", str(stale))  # regenerating repairs it
    assert stale.read_text() == TARGET.read_text()
