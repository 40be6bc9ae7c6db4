"""Write (or check) the frontend's REST types, generated from the OpenAPI schema.

`python manage.py api_types` renders the schema that /api/schema/ serves and turns it into
TypeScript with the pinned `openapi-typescript` (frontend/node_modules), into
frontend/src/lib/schema.gen.ts. `--check` writes nothing and fails when the committed file differs
from what the current schema gives, so a serializer change cannot leave the browser's types behind
(a test runs it in `make test`).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

FRONTEND = Path(settings.BASE_DIR) / "frontend"
TARGET = FRONTEND / "src" / "lib" / "schema.gen.ts"
GENERATOR = FRONTEND / "node_modules" / ".bin" / "openapi-typescript"
OPTIONS = [
    "--enum-values",  # the enums' values as arrays too: the UI offers exactly the server's choices
    "--root-types", "--root-types-no-schema-prefix",  # `Project`, not `components["schemas"]["Project"]`
    "--default-non-nullable", "false",  # a request field with a default may be left out
]
HEADER = "// Generated from the OpenAPI schema by `make api-types` (manage.py api_types). Do not edit.\n"


def generate_types() -> str:
    """The TypeScript for the current schema, exactly as the committed file should read."""
    if not GENERATOR.exists():
        raise CommandError(f"{GENERATOR} is missing: run `npm ci` in frontend/ (make frontend does) first.")
    schema = SchemaGenerator().get_schema(request=None, public=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "openapi.json", Path(tmp) / "schema.ts"
        source.write_bytes(OpenApiJsonRenderer().render(schema, renderer_context={}))
        done = subprocess.run(
            [str(GENERATOR), str(source), "--output", str(out), *OPTIONS],
            cwd=FRONTEND, capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise CommandError(f"openapi-typescript failed:\n{done.stdout}{done.stderr}")
        return HEADER + out.read_text()


class Command(BaseCommand):
    help = "Generate frontend/src/lib/schema.gen.ts from the OpenAPI schema (--check: fail if it is stale)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if the file is stale.")
        parser.add_argument("--file", type=Path, default=TARGET, help="The generated file (default: %(default)s)")

    def handle(self, *args: Any, check: bool = False, file: Path = TARGET, **options: Any) -> None:
        fresh = generate_types()
        current = file.read_text() if file.exists() else ""
        if check:
            if current != fresh:
                raise CommandError(
                    f"{file} is stale against the OpenAPI schema: run `make api-types` and commit the result."
                )
            self.stdout.write("API types are up to date.")
            return
        if current == fresh:
            self.stdout.write("API types were already up to date.")
            return
        file.write_text(fresh)
        self.stdout.write(f"Wrote {file}.")
