"""Prompts: single create, image upload, and the all-or-nothing JSONL import."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import reset_queries, transaction

from annotator import answers
from annotator import input as untrusted
from annotator.errors import InvalidInput
from annotator.models import Category, Project, Prompt, PromptImage
from annotator.services.audit import audit_record

ROLES = {"system", "user", "assistant"}
PIL_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_IMAGE_SIDE = 8192
IMPORT_FIELDS = {"messages", "prompt", "images", "category", "reference", "metadata", "id"}
MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class ImageData:
    """An image checked by content (not by its claimed type or name)."""

    name: str
    data: bytes
    content_type: str
    width: int
    height: int
    sha256: str


def image_check(*, name: str, data: bytes) -> ImageData:
    """Decode the bytes with Pillow; refuse anything that is not a PNG/JPEG/WebP/GIF within limits."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > settings.MAX_IMAGE_BYTES:
        raise InvalidInput(
            f"Image {name!r} is {len(data)} bytes; the limit is {settings.MAX_IMAGE_BYTES} bytes.",
            code="image_too_large",
        )
    if not data:
        raise InvalidInput(f"Image {name!r} is empty.", code="bad_image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            width, height = img.size
            img.verify()
    except Image.DecompressionBombError as exc:
        # A small file whose header claims a huge picture: refused before anything decodes it.
        raise InvalidInput(f"Image {name!r} is too large to decode ({exc}).", code="bad_image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{name!r} is not a readable image ({exc.__class__.__name__}).", code="bad_image") from None
    if fmt not in PIL_TYPES:
        raise InvalidInput(f"Image {name!r} is {fmt}; allowed: PNG, JPEG, WebP, GIF.", code="bad_image_type")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise InvalidInput(
            f"Image {name!r} is {width}x{height}; the limit is {MAX_IMAGE_SIDE} a side.", code="bad_image"
        )
    return ImageData(name, data, PIL_TYPES[fmt], width, height, hashlib.sha256(data).hexdigest())


def image_from_data_url(url: str, *, name: str) -> ImageData:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or ";base64" not in head:
        raise InvalidInput(f"{name} is not a base64 data:image/... URL.", code="bad_image")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{name} has invalid base64.", code="bad_image") from None
    return image_check(name=name, data=data)


def _count_image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image"
    )


def messages_check(messages: Any) -> list[dict[str, Any]]:
    """Validate chat messages (TRL conversational layout) and return a clean copy."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {role, content} objects.")
    clean: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidInput(f"messages[{i}] must be an object.")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise InvalidInput(f"messages[{i}].role must be one of system, user, assistant.")
        if isinstance(content, str):
            clean.append({"role": role, "content": content})
            continue
        if not isinstance(content, list) or not content:
            raise InvalidInput(f"messages[{i}].content must be a string or a non-empty list of parts.")
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image":
                parts.append({"type": "image"})
            else:
                raise InvalidInput(f"messages[{i}].content[{j}] must be {{type: text, text}} or {{type: image}}.")
        clean.append({"role": role, "content": parts})
    if clean[-1]["role"] != "user":
        raise InvalidInput("The last message must be the user's: the model answers it.")
    return clean


def _attach_image_parts(messages: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """TRL's layout with a plain-text prompt and an `images` column: the images lead the first user turn."""
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    msg = messages[first_user]
    parts = msg["content"] if isinstance(msg["content"], list) else [{"type": "text", "text": msg["content"]}]
    messages[first_user] = {"role": "user", "content": [{"type": "image"}] * count + parts}
    return messages


def _prompt_fields(*, messages: Any, category: Any, reference: Any, metadata: Any, image_count: int) -> dict[str, Any]:
    clean = messages_check(messages)
    if category is None:
        category = Category.GENERAL
    if category not in Category.values:
        raise InvalidInput(f"category must be one of {', '.join(Category.values)}.")
    if reference is None:
        reference = ""
    if not isinstance(reference, str):
        raise InvalidInput("reference must be a string.")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object.")
    parts = _count_image_parts(clean)
    if parts == 0 and image_count:
        clean = _attach_image_parts(clean, image_count)
    elif parts != image_count:
        raise InvalidInput(f"The messages have {parts} image part(s) but {image_count} image(s) were given.")
    return {"messages": clean, "category": category, "reference_answer": reference, "metadata": metadata}


def _store_images(prompt: Prompt, images: list[ImageData], written: list[str], start: int = 0) -> list[PromptImage]:
    """Save the files and rows; each file's name goes to `written` as soon as it is on disk (see
    _files_removed_on_error)."""
    stored = []
    for offset, img in enumerate(images):
        row = PromptImage(
            prompt=prompt,
            position=start + offset,
            content_type=img.content_type,
            width=img.width,
            height=img.height,
            size_bytes=len(img.data),
            sha256=img.sha256,
            original_name=img.name[:255],
        )
        row.file.save(img.name, ContentFile(img.data), save=False)
        written.append(row.file.name)
        row.save()
        stored.append(row)
    return stored


def prompt_create(
    *,
    project: Project,
    actor: Any,
    messages: Any,
    category: Any = None,
    reference: Any = None,
    metadata: Any = None,
    images: list[ImageData] | None = None,
) -> Prompt:
    images = images or []
    fields = _prompt_fields(
        messages=messages, category=category, reference=reference, metadata=metadata, image_count=len(images)
    )
    with _files_removed_on_error() as written, transaction.atomic():
        prompt = Prompt.objects.create(project=project, created_by=actor, **fields)
        _store_images(prompt, images, written)
        audit_record(
            project=project,
            actor=actor,
            action="prompt.created",
            target=prompt,
            data={"category": prompt.category, "images": len(images)},
        )
    return prompt


@transaction.atomic
def prompt_update(*, prompt: Prompt, actor: Any, **fields: Any) -> Prompt:
    allowed = {"category", "reference_answer", "metadata", "messages"}
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInput(f"Unknown prompt fields: {', '.join(sorted(unknown))}.")
    merged = _prompt_fields(
        messages=fields.get("messages", prompt.messages),
        category=fields.get("category", prompt.category),
        reference=fields.get("reference_answer", prompt.reference_answer),
        metadata=fields.get("metadata", prompt.metadata),
        image_count=prompt.images.count(),
    )
    for key in fields:
        setattr(prompt, key, merged[key])
    prompt.save(update_fields=list(fields))
    if {"messages", "reference_answer"} & set(fields):  # its traces' answers are checked against it again
        answers.verdicts_fill(project_id=prompt.project_id, prompt_id=prompt.pk)
    audit_record(
        project=prompt.project, actor=actor, action="prompt.updated", target=prompt, data={"fields": sorted(fields)}
    )
    return prompt


@transaction.atomic
def prompt_delete(*, prompt: Prompt, actor: Any) -> None:
    audit_record(project=prompt.project, actor=actor, action="prompt.deleted", target=prompt)
    prompt.delete()


def prompt_image_add(*, prompt: Prompt, actor: Any, image: ImageData) -> PromptImage:
    """Append an image to a prompt, and an image part to its first user message."""
    with _files_removed_on_error() as written, transaction.atomic():
        position = prompt.images.count()
        prompt.messages = _attach_image_parts_at_end(prompt.messages)
        prompt.save(update_fields=["messages"])
        answers.verdicts_fill(project_id=prompt.project_id, prompt_id=prompt.pk)  # the user text may change
        (row,) = _store_images(prompt, [image], written, start=position)
        audit_record(
            project=prompt.project,
            actor=actor,
            action="prompt.image_added",
            target=prompt,
            data={"position": position, "sha256": image.sha256, "bytes": len(image.data)},
        )
    return row


def _attach_image_parts_at_end(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages = [dict(m) for m in messages]
    last_image_owner = None
    for i, m in enumerate(messages):
        if isinstance(m["content"], list) and any(p.get("type") == "image" for p in m["content"]):
            last_image_owner = i
    target = (
        last_image_owner
        if last_image_owner is not None
        else next(i for i, m in enumerate(messages) if m["role"] == "user")
    )
    msg = messages[target]
    parts = msg["content"] if isinstance(msg["content"], list) else [{"type": "text", "text": msg["content"]}]
    image_positions = [j for j, p in enumerate(parts) if p.get("type") == "image"]
    insert_at = image_positions[-1] + 1 if image_positions else 0
    messages[target] = {**msg, "content": [*parts[:insert_at], {"type": "image"}, *parts[insert_at:]]}
    return messages


def _parse_import_line(
    number: int, raw: str, uploads: dict[str, ImageData], used: set[str]
) -> tuple[dict[str, Any], list[ImageData]]:
    obj = untrusted.loads(raw, what="the line")
    if not isinstance(obj, dict):
        raise InvalidInput("each line must be a JSON object")
    unknown = set(obj) - IMPORT_FIELDS
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "messages" in obj and "prompt" in obj:
        raise InvalidInput("give either 'messages' or 'prompt', not both")
    if "messages" in obj:
        messages = obj["messages"]
    elif "prompt" in obj:
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InvalidInput("'prompt' is empty")
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            messages = prompt  # TRL's conversational prompt column
        else:
            raise InvalidInput("'prompt' must be a string or a list of messages")
    else:
        raise InvalidInput("missing field 'messages' or 'prompt'")
    refs = obj.get("images", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise InvalidInput("'images' must be a list of strings (uploaded file names or data: URLs)")
    images = []
    for k, ref in enumerate(refs):
        if ref.startswith("data:"):
            images.append(image_from_data_url(ref, name=f"images[{k}]"))
        elif ref in uploads:
            images.append(uploads[ref])
            used.add(ref)
        else:
            raise InvalidInput(
                f"unknown image {ref!r}: upload it in the same request or give a data: URL", code="unknown_image"
            )
    fields = _prompt_fields(
        messages=messages,
        category=obj.get("category"),
        reference=obj.get("reference"),
        metadata=obj.get("metadata"),
        image_count=len(images),
    )
    if "id" in obj:
        fields["metadata"] = {**fields["metadata"], "source_id": obj["id"]}
    return fields, images


IMPORT_BATCH = 500  # rows per INSERT; what an import holds in memory at once


def _lines(data: bytes | BinaryIO) -> Iterator[tuple[int, str]]:
    """(1-based number, text) of each non-blank line, read from a file without loading it whole."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else getattr(data, "file", data)
    stream.seek(0)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline=None)
    number = 0
    try:
        for number, raw in enumerate(text, start=1):
            if raw.strip():
                yield number, raw
    except UnicodeDecodeError:
        raise InvalidInput(f"The file is not UTF-8 (line {number + 1}).", code="bad_encoding") from None
    finally:
        text.detach()  # leave the caller's file open


@contextlib.contextmanager
def _files_removed_on_error() -> Iterator[list[str]]:
    """Image files written inside a transaction that then fails would stay on disk with no row:
    collect their names and delete them if the block raises."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        from django.core.files.storage import default_storage

        for name in written:
            with contextlib.suppress(OSError):
                default_storage.delete(name)
        raise


def prompts_import_jsonl(
    *, project: Project, actor: Any, data: bytes | BinaryIO, uploads: dict[str, ImageData] | None = None
) -> list[int]:
    """Import prompts from JSONL: every line valid, or nothing is imported.

    `data` is the bytes or a binary file (an upload on disk): it is read once, line by line, never
    whole, so memory stays flat in the file's size; the rows go in by batches of IMPORT_BATCH, in
    one transaction that a bad line rolls back. Returns the new prompts' ids. Errors name their 1-based line numbers:
    InvalidInput.details is [{line, error}].
    """
    uploads = uploads or {}
    size = len(data) if isinstance(data, bytes | bytearray) else getattr(data, "size", None)
    if size is not None and size > settings.MAX_IMPORT_BYTES:
        raise InvalidInput(f"The file is {size} bytes; the limit is {settings.MAX_IMPORT_BYTES}.", code="too_large")
    errors: list[dict[str, Any]] = []
    used: set[str] = set()
    created: list[int] = []
    # One pass: each line is checked and, while every line so far was good, inserted in batches; at
    # the first bad line inserting stops, the rest is only checked (to report up to
    # MAX_REPORTED_ERRORS bad lines), and raising rolls the transaction back. Parsing each line
    # once instead of twice (a checking pass, then an inserting one) took a 100k import through REST
    # from 20.1 ± 3.7 s to 18.4 ± 0.3 s (bench/import_prompts.py); a bad file costs the inserts
    # before its first bad line.
    with _files_removed_on_error() as written, transaction.atomic():
        batch: list[tuple[Prompt, list[ImageData]]] = []

        def flush() -> None:
            if settings.DEBUG:
                # DEBUG keeps the SQL of every query of the request, parameters written out: over a
                # 50 MiB import that is another 50 MiB or more held until the request ends.
                reset_queries()
            if not batch:
                return
            Prompt.objects.bulk_create([prompt for prompt, _ in batch])
            for prompt, images in batch:
                _store_images(prompt, images, written)
            created.extend(prompt.pk for prompt, _ in batch)
            batch.clear()

        for number, raw in _lines(data):
            try:
                fields, images = _parse_import_line(number, raw, uploads, used)
            except InvalidInput as exc:
                errors.append({"line": number, "error": exc.message})
                batch.clear()
                if len(errors) >= MAX_REPORTED_ERRORS:
                    break
                continue
            if errors:
                continue
            batch.append((Prompt(project=project, created_by=actor, **fields), images))
            if len(batch) >= IMPORT_BATCH:
                flush()
        if errors:
            first = errors[0]
            raise InvalidInput(
                f"Line {first['line']}: {first['error']}. Nothing was imported ({len(errors)} bad line(s)).",
                code="import_failed",
                details=errors,
            )
        flush()
        if not created:
            raise InvalidInput("The file holds no prompts.", code="import_failed")
        audit_record(
            project=project,
            actor=actor,
            action="prompt.imported",
            target_type="prompt",
            data={
                "count": len(created),
                "first_id": created[0],
                "last_id": created[-1],
                "unused_uploads": sorted(set(uploads) - used),
            },
        )
    return created
