"""Assignment: an owner hands prompts (and so their traces) to annotators, N annotators per prompt.

``assignments_distribute`` tops every chosen prompt up to ``overlap`` distinct annotators. Each
prompt goes to the annotators with the least work relative to their weight (``round_robin``: all
weights 1; ``weighted``: the given weights; ``category``: only annotators who take the prompt's
category, least loaded first). Ties go in the order the annotators were named, rotating, so equal
annotators take turns. Assignments that already exist count towards the overlap: distributing
again adds only what is missing, and never assigns a prompt to one annotator twice.
"""

from __future__ import annotations

import heapq
from typing import Any

from django.db import transaction
from django.db.models import Count

from annotator.errors import InvalidInput, NotFound
from annotator.models import Assignment, Category, Membership, Project, Prompt, Role
from annotator.services.audit import audit_record

STRATEGIES = ("round_robin", "weighted", "category")
MAX_OVERLAP = 20


def _annotators(project: Project, usernames: Any) -> list[Any]:
    if not isinstance(usernames, list) or not usernames or not all(isinstance(u, str) for u in usernames):
        raise InvalidInput("annotators must be a non-empty list of usernames.")
    usernames = list(dict.fromkeys(usernames))
    members = {
        m.user.username: m
        for m in Membership.objects.filter(project=project, user__username__in=usernames).select_related("user")
    }
    missing = [u for u in usernames if u not in members]
    if missing:
        raise InvalidInput(f"Not members of this project: {', '.join(missing)}.", code="unknown_user")
    low = [u for u in usernames if Role.rank(members[u].role) < Role.rank(Role.SUPERVISOR)]
    if low:
        raise InvalidInput(f"Viewers cannot review; give them the supervisor role first: {', '.join(low)}.")
    return [members[u].user for u in usernames]


def _weights(strategy: str, weights: Any, names: list[str]) -> dict[str, float]:
    if strategy != "weighted":
        return dict.fromkeys(names, 1.0)
    if not isinstance(weights, dict):
        raise InvalidInput("weighted distribution needs weights: {username: positive number}.")
    out = {}
    for name in names:
        w = weights.get(name, 1.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
            raise InvalidInput(f"The weight of {name} must be a positive number.")
        out[name] = float(w)
    return out


def _categories(strategy: str, categories: Any, names: list[str]) -> dict[str, set[str]] | None:
    if strategy != "category":
        return None
    if not isinstance(categories, dict) or not categories:
        raise InvalidInput("category distribution needs categories: {username: [category, ...]}.")
    out: dict[str, set[str]] = {}
    for name in names:
        cats = categories.get(name, [])
        if not isinstance(cats, list) or not all(c in Category.values for c in cats):
            raise InvalidInput(f"The categories of {name} must be a list from {', '.join(Category.values)}.")
        out[name] = set(cats)
    return out


def _prompts(project: Project, prompt_ids: Any, category: Any) -> list[Prompt]:
    qs = Prompt.objects.filter(project=project)
    if prompt_ids is not None:
        ints = all(isinstance(i, int) and not isinstance(i, bool) for i in prompt_ids or [None])
        if not isinstance(prompt_ids, list) or not ints:
            raise InvalidInput("prompts must be a list of prompt ids.")
        qs = qs.filter(pk__in=prompt_ids)
        found = set(qs.values_list("pk", flat=True))
        missing = [i for i in prompt_ids if i not in found]
        if missing:
            raise NotFound(f"Prompts not in this project: {', '.join(map(str, missing[:20]))}.")
    if category is not None:
        if category not in Category.values:
            raise InvalidInput(f"category must be one of {', '.join(Category.values)}.")
        qs = qs.filter(category=category)
    return list(qs.order_by("pk"))


@transaction.atomic
def assignments_distribute(
    *,
    project: Project,
    actor: Any,
    annotators: Any,
    overlap: Any = 1,
    strategy: Any = "round_robin",
    prompts: Any = None,
    category: Any = None,
    weights: Any = None,
    categories: Any = None,
    due_at: Any = None,
) -> list[Assignment]:
    """Give each chosen prompt (all of the project's by default) to ``overlap`` annotators."""
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= MAX_OVERLAP:
        raise InvalidInput(f"overlap must be an integer from 1 to {MAX_OVERLAP}.")
    people = _annotators(project, annotators)
    if overlap > len(people):
        raise InvalidInput(f"overlap {overlap} needs at least {overlap} annotators; {len(people)} given.")
    names = [u.username for u in people]
    weight = _weights(strategy, weights, names)
    takes = _categories(strategy, categories, names)
    chosen = _prompts(project, prompts, category)
    # Lock the project's assignments against a concurrent distribution (two owners at once).
    Project.objects.select_for_update().filter(pk=project.pk).first()

    existing: dict[int, set[int]] = {}
    for prompt_id, user_id in Assignment.objects.filter(project=project).values_list("prompt_id", "annotator_id"):
        existing.setdefault(prompt_id, set()).add(user_id)
    load = dict(
        Assignment.objects.filter(project=project, annotator__in=people)
        .values("annotator_id")
        .annotate(n=Count("id"))
        .values_list("annotator_id", "n")
    )
    order = {u.pk: i for i, u in enumerate(people)}
    turn = 0
    new: list[Assignment] = []
    short: list[int] = []
    for prompt in chosen:
        have = existing.get(prompt.pk, set())
        need = overlap - len(have)
        if need <= 0:
            continue
        eligible = [
            u for u in people
            if u.pk not in have and (takes is None or prompt.category in takes[u.username])
        ]
        if len(eligible) < need:
            short.append(prompt.pk)
            continue
        # Least loaded relative to weight; ties in rotating order so equals take turns.
        picks = heapq.nsmallest(
            need,
            eligible,
            key=lambda u: (load.get(u.pk, 0) / weight[u.username], (order[u.pk] - turn) % len(people)),
        )
        turn += 1
        for user in picks:
            load[user.pk] = load.get(user.pk, 0) + 1
            new.append(Assignment(project=project, prompt=prompt, annotator=user, created_by=actor, due_at=due_at))
    if short:
        raise InvalidInput(
            f"{len(short)} prompt(s) have fewer eligible annotators than the overlap "
            f"(e.g. prompt {short[0]}); name more annotators or give them the prompts' categories.",
            code="not_enough_annotators",
            details={"prompts": short[:100]},
        )
    Assignment.objects.bulk_create(new, batch_size=2000)
    audit_record(
        project=project,
        actor=actor,
        action="assignments.distributed",
        target_type="project",
        target_id=project.pk,
        data={"strategy": strategy, "overlap": overlap, "annotators": names, "prompts": len(chosen),
              "created": len(new)},
    )
    if new:
        from annotator import events

        per_user: dict[str, int] = {}
        for a in new:
            per_user[a.annotator.username] = per_user.get(a.annotator.username, 0) + 1
        transaction.on_commit(
            lambda: events.publish_project_event(
                project.pk, "queue.assigned", annotators=per_user, prompts=len({a.prompt_id for a in new}),
                created=len(new),
            )
        )
    return new


@transaction.atomic
def assignment_remove(*, assignment: Assignment, actor: Any) -> None:
    audit_record(
        project=assignment.project,
        actor=actor,
        action="assignment.removed",
        target=assignment,
        data={"prompt": assignment.prompt_id, "annotator": assignment.annotator_id},
    )
    assignment.delete()


