"""Prompts: single create, image upload, and the all-or-nothing JSONL import."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

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


def _store_images(prompt: Prompt, images: list[ImageData], start: int = 0) -> list[PromptImage]:
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
        row.save()
        stored.append(row)
    return stored


@transaction.atomic
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
    prompt = Prompt.objects.create(project=project, created_by=actor, **fields)
    _store_images(prompt, images)
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
    audit_record(
        project=prompt.project, actor=actor, action="prompt.updated", target=prompt, data={"fields": sorted(fields)}
    )
    return prompt


@transaction.atomic
def prompt_delete(*, prompt: Prompt, actor: Any) -> None:
    audit_record(project=prompt.project, actor=actor, action="prompt.deleted", target=prompt)
    prompt.delete()


@transaction.atomic
def prompt_image_add(*, prompt: Prompt, actor: Any, image: ImageData) -> PromptImage:
    """Append an image to a prompt, and an image part to its first user message."""
    position = prompt.images.count()
    prompt.messages = _attach_image_parts_at_end(prompt.messages)
    prompt.save(update_fields=["messages"])
    (row,) = _store_images(prompt, [image], start=position)
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
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
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


def prompts_import_jsonl(
    *, project: Project, actor: Any, data: bytes, uploads: dict[str, ImageData] | None = None
) -> list[Prompt]:
    """Import prompts from JSONL: every line valid, or nothing is imported.

    Errors name their 1-based line numbers: InvalidInput.details is a list of {line, error}.
    """
    uploads = uploads or {}
    if len(data) > settings.MAX_IMPORT_BYTES:
        raise InvalidInput(
            f"The file is {len(data)} bytes; the limit is {settings.MAX_IMPORT_BYTES}.", code="too_large"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"The file is not UTF-8 (byte {exc.start}).", code="bad_encoding") from None
    parsed: list[tuple[dict[str, Any], list[ImageData]]] = []
    errors: list[dict[str, Any]] = []
    used: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            parsed.append(_parse_import_line(number, raw, uploads, used))
        except InvalidInput as exc:
            errors.append({"line": number, "error": exc.message})
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        first = errors[0]
        raise InvalidInput(
            f"Line {first['line']}: {first['error']}. Nothing was imported ({len(errors)} bad line(s)).",
            code="import_failed",
            details=errors,
        )
    if not parsed:
        raise InvalidInput("The file holds no prompts.", code="import_failed")
    with transaction.atomic():
        created = []
        for fields, images in parsed:
            prompt = Prompt.objects.create(project=project, created_by=actor, **fields)
            _store_images(prompt, images)
            created.append(prompt)
        audit_record(
            project=project,
            actor=actor,
            action="prompt.imported",
            target_type="prompt",
            data={
                "count": len(created),
                "first_id": created[0].pk,
                "last_id": created[-1].pk,
                "unused_uploads": sorted(set(uploads) - used),
            },
        )
    return created
