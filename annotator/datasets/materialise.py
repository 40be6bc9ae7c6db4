"""Turn a Corpus of human labels and corrections into records in the formats TRL trains on.

Pure functions over plain records (``records.py``); no Django, no I/O. Each kind yields dicts with
the same keys on every record, so Arrow/Parquet schemas are stable (see ``arrow_schema``). The
rules (which traces count, how annotators are combined) are written for users in docs/datasets.md;
keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from annotator.datasets.records import Corpus, PromptRec, StepRec, TraceRec
from trainer_worker.vocabulary.format import render_completion, render_prefix
from trainer_worker.vocabulary.labels import KNOWLEDGE_SCORES, SAFETY_SCORES, VALUE_SCORES

Record = dict[str, Any]

# What the SFT kinds do with a step the annotators rated 0 (correct but redundant): keep it, drop
# it from the completion, or leave out the trace's record altogether.
REDUNDANT_STEPS = ("keep", "drop", "exclude")


@dataclass(frozen=True)
class KindInfo:
    description: str
    trainer: str  # the TRL trainer (or training recipe) the kind feeds


KINDS: dict[str, KindInfo] = {
    "sft": KindInfo("Accepted traces as `messages` (user turns + rendered assistant completion).", "SFTTrainer"),
    "sft_prompt_completion": KindInfo("Accepted traces as conversational `prompt`/`completion`.", "SFTTrainer"),
    "preference": KindInfo(
        "Whole-answer pairs `prompt`/`chosen`/`rejected`: corrected branch vs original, and explicit "
        "sibling comparisons.",
        "DPOTrainer, RewardTrainer",
    ),
    "preference_step": KindInfo(
        "Step-level pairs (Step-DPO): both answers carry the shared prefix and differ in one step; `source` "
        "is `correction` (corrected vs original step) or `alternatives` (the picked candidate vs each one not "
        "picked).",
        "DPOTrainer",
    ),
    "stepwise": KindInfo(
        "Stepwise supervision `prompt`/`completions`/`labels` from step ratings and corrections.",
        "PRM (token classification at step separators)",
    ),
    "unpaired": KindInfo("`prompt`/`completion`/`label` (desirable or not) for KTO.", "KTOTrainer"),
    "verifier_safety": KindInfo(
        "(prompt, response, label) with the six safety labels and SafeWork score.", "RewardTrainer / classifier"
    ),
    "verifier_value": KindInfo("(prompt, response, label) good/bad.", "RewardTrainer / classifier"),
    "verifier_knowledge": KindInfo(
        "(prompt, response, label) true/false against the reference answer.", "RewardTrainer / classifier"
    ),
    "rl_prompts": KindInfo("Prompts with `images`, `reference` and `category` for GRPO.", "GRPOTrainer"),
    "sharegpt": KindInfo(
        "LLaVA/ShareGPT `conversations` (`from`/`value`) of accepted traces.", "SafeWork / LLaVA code"
    ),
}

KIND_NAMES = tuple(KINDS)  # the dataset kinds' enum in the OpenAPI schema (webapp/settings.py)


# ---------------------------------------------------------------------------------------------
# helpers


def _sid(value: Any) -> str | None:
    return None if value is None else str(value)


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a multimodal part list.

    Image parts are dropped from the text: images travel in the ``images`` column and TRL inserts
    one image placeholder per image before the first user message (``prepare_multimodal_messages``).
    Keeping content a plain string on every row keeps one Arrow type for the column.
    """
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content or [] if p.get("type") == "text"]
    return "\n".join(t for t in parts if t)


def _prompt_messages(prompt: PromptRec) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": _text_of(m.get("content"))} for m in prompt.messages]


def _completion(trace: TraceRec) -> str:
    return render_completion([s.text for s in trace.steps], trace.answer)


def _verdict(trace: TraceRec) -> str | None:
    """The adjudicated verdict when a reviewer resolved the trace; otherwise 'accept' when at least
    one reviewer accepted and nobody rejected, 'reject' when somebody rejected and nobody accepted,
    None when unreviewed or reviewers disagree."""
    if trace.adjudication is not None and trace.adjudication.verdict:
        return trace.adjudication.verdict
    verdicts = {r.verdict for r in trace.reviews if r.verdict}
    if verdicts == {"accept"}:
        return "accept"
    if verdicts == {"reject"}:
        return "reject"
    return None


def _consensus(values: list[str]) -> str | None:
    """The label more than half of the annotators gave; None on a tie or with no labels."""
    if not values:
        return None
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    label, n = max(counts.items(), key=lambda kv: kv[1])
    return label if n * 2 > len(values) else None


def _uniq(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _redundant(step: StepRec) -> bool:
    """More than half of the decided ratings of the step are 0 (unsure ratings do not count)."""
    decided = [lab.rating for lab in step.labels if lab.rating is not None]
    return bool(decided) and sum(1 for r in decided if r == 0) * 2 > len(decided)


class _Ctx:
    def __init__(self, corpus: Corpus, images: bool | None, redundant_steps: str = "keep") -> None:
        self.corpus = corpus
        self.redundant_steps = redundant_steps
        # The images column exists on every record of an export or on none: a text-only export
        # must not carry it (TRL's SFTTrainer refuses an `images` column with a text-only model),
        # and a mixed one needs it on text rows too (empty list) for a stable schema.
        self.with_images = corpus.has_images if images is None else images

    def prompt_of(self, trace: TraceRec) -> PromptRec | None:
        prompt = self.corpus.prompt(trace.prompt_id)
        if prompt is None or (prompt.images and not self.with_images):
            return None  # an image prompt cannot be trained on by a text-only export
        return prompt

    def sft_completion(self, trace: TraceRec) -> tuple[str, list[str]]:
        """The completion an SFT kind imitates, and who rated the steps ``drop`` left out."""
        if self.redundant_steps != "drop":
            return _completion(trace), []
        kept = [s for s in trace.steps if not _redundant(s)]
        dropped_by = [lab.annotator for s in trace.steps if _redundant(s) for lab in s.labels if lab.rating == 0]
        return render_completion([s.text for s in kept], trace.answer), dropped_by

    def base(self, prompt: PromptRec, traces: list[TraceRec], annotators: list[str]) -> Record:
        # Item by item, in this order (a record's key order is its order in a JSON download); a
        # snapshot build calls this once per record.
        rec: Record = {"images": list(prompt.images)} if self.with_images else {}
        if len(traces) == 1:
            version = traces[0].model_version or None
        else:
            versions = _uniq([t.model_version for t in traces if t.model_version])
            version = versions[0] if len(versions) == 1 else (",".join(versions) or None)
        rec["prompt_id"] = str(prompt.id)
        rec["category"] = prompt.category
        rec["trace_ids"] = [str(t.id) for t in traces]
        rec["annotators"] = list(dict.fromkeys(annotators))
        rec["model_version"] = version
        return rec


def _accepted(ctx: _Ctx) -> Iterator[tuple[PromptRec, TraceRec, str, list[str]]]:
    """The SFT kinds' traces: prompt, trace, the completion to imitate, and its annotators."""
    for trace in ctx.corpus.traces:
        if trace.answer is None or _verdict(trace) != "accept":
            continue
        if ctx.redundant_steps == "exclude" and any(_redundant(s) for s in trace.steps):
            continue
        prompt = ctx.prompt_of(trace)
        if prompt is None:
            continue
        completion, dropped_by = ctx.sft_completion(trace)
        annotators = [r.annotator for r in trace.reviews if r.verdict == "accept"] + dropped_by
        yield prompt, trace, completion, annotators


# ---------------------------------------------------------------------------------------------
# kinds


def _sft(ctx: _Ctx) -> Iterator[Record]:
    for prompt, trace, completion, annotators in _accepted(ctx):
        messages = [*_prompt_messages(prompt), {"role": "assistant", "content": completion}]
        yield {"messages": messages, **ctx.base(prompt, [trace], annotators)}


def _sft_prompt_completion(ctx: _Ctx) -> Iterator[Record]:
    for prompt, trace, completion, annotators in _accepted(ctx):
        yield {
            "prompt": _prompt_messages(prompt),
            "completion": [{"role": "assistant", "content": completion}],
            **ctx.base(prompt, [trace], annotators),
        }


def _pair(
    ctx: _Ctx, prompt: PromptRec, chosen: TraceRec, rejected: TraceRec, annotators: list[str], source: str
) -> Record:
    return {
        "prompt": _prompt_messages(prompt),
        "chosen": [{"role": "assistant", "content": _completion(chosen)}],
        "rejected": [{"role": "assistant", "content": _completion(rejected)}],
        "source": source,
        **ctx.base(prompt, [chosen, rejected], annotators),
    }


def _preference(ctx: _Ctx) -> Iterator[Record]:
    corpus = ctx.corpus
    for corr in corpus.corrections:
        original = corpus.trace(corr.original_trace_id)
        branch = corpus.trace(corr.corrected_trace_id)
        if original is None or branch is None or original.answer is None or branch.answer is None:
            continue  # a whole-answer pair needs two finished answers
        if _verdict(branch) == "reject" or _verdict(original) == "accept":
            continue  # reviewers said the correction did not lead to the better answer
        prompt = ctx.prompt_of(original)
        if prompt is None:
            continue
        annotators = [corr.author] + [r.annotator for r in branch.reviews if r.verdict == "accept"]
        yield _pair(ctx, prompt, branch, original, annotators, "correction")
    for comp in corpus.comparisons:
        preferred = corpus.trace(comp.preferred_trace_id)
        other = corpus.trace(comp.other_trace_id)
        if preferred is None or other is None or preferred.answer is None or other.answer is None:
            continue
        if preferred.prompt_id != other.prompt_id:
            continue  # only siblings of one prompt are comparable
        prompt = ctx.prompt_of(preferred)
        if prompt is None:
            continue
        yield _pair(ctx, prompt, preferred, other, [comp.annotator], "comparison")


def _preference_step(ctx: _Ctx) -> Iterator[Record]:
    # Layout: the prompt ends with the user turn; chosen and rejected are each ONE assistant
    # message holding the shared prefix plus the step. TRL 1.16's DPOTrainer tokenises a
    # conversational prompt with add_generation_prompt=True, so a prompt ending in a partial
    # assistant message would be closed (<|im_end|>) and a second assistant turn opened: the model
    # would learn the step in a context it never sees when continuing (continue_final_message).
    # With the prefix inside both answers the context is exactly the continuation context, and the
    # prefix tokens have identical log-probs in chosen and rejected, so they cancel in the DPO
    # margin: the loss is the Step-DPO loss on the differing step. See docs/datasets.md.
    corpus = ctx.corpus
    for corr in corpus.corrections:
        original = corpus.trace(corr.original_trace_id)
        if original is None:
            continue
        prompt = ctx.prompt_of(original)
        if prompt is None:
            continue
        prefix = [s.text for s in original.steps if s.index < corr.step_index]
        branch = corpus.trace(corr.corrected_trace_id)
        traces = [t for t in (branch, original) if t is not None]
        rec = {
            "prompt": _prompt_messages(prompt),
            "chosen": [{"role": "assistant", "content": render_prefix([*prefix, corr.new_text])}],
            "rejected": [{"role": "assistant", "content": render_prefix([*prefix, corr.old_text])}],
            "step_index": corr.step_index,
            "source": "correction",
            **ctx.base(prompt, traces, [corr.author]),
        }
        yield rec
    for pick in corpus.picks:
        # Picked among K samples of the model itself: every rejected step is in-distribution.
        trace = corpus.trace(pick.trace_id)
        prompt = None if trace is None else ctx.prompt_of(trace)
        if trace is None or prompt is None:
            continue
        prefix = [s.text for s in trace.steps if s.index < pick.step_index]
        for rejected in pick.rejected:
            yield {
                "prompt": _prompt_messages(prompt),
                "chosen": [{"role": "assistant", "content": render_prefix([*prefix, pick.chosen])}],
                "rejected": [{"role": "assistant", "content": render_prefix([*prefix, rejected])}],
                "step_index": pick.step_index,
                "source": "alternatives",
                **ctx.base(prompt, [trace], [pick.author]),
            }


def _step_label(ratings: list[int | None]) -> bool | None:
    decided = [r for r in ratings if r is not None]
    if not decided:
        return None  # nobody rated it, or everybody was unsure
    return all(r >= 0 for r in decided)  # one -1 marks the step wrong; 0 (neutral) is not an error


def _stepwise(ctx: _Ctx) -> Iterator[Record]:
    corpus = ctx.corpus
    for trace in corpus.traces:
        prompt = ctx.prompt_of(trace)
        if prompt is None:
            continue
        labels: dict[int, bool | None] = {s.index: _step_label([lab.rating for lab in s.labels]) for s in trace.steps}
        annotators = [lab.annotator for s in trace.steps for lab in s.labels if lab.rating is not None]
        # A correction says: the edited step was wrong, and the steps before it were fine.
        for corr in corpus.corrections_of(trace.id):
            labels[corr.step_index] = False
            for i in range(corr.step_index):
                if labels.get(i) is None:
                    labels[i] = True
            annotators.append(corr.author)
        into = corpus.correction_into(trace.id)
        if into is not None:  # a corrected branch: its prefix and the human step are good
            for i in range(into.step_index + 1):
                if labels.get(i) is None:
                    labels[i] = True
            annotators.append(into.author)
        completions: list[str] = []
        out: list[bool] = []
        for step in sorted(trace.steps, key=lambda s: s.index):
            label = labels.get(step.index)
            if label is None:
                break  # labels must cover a contiguous run of steps from the start
            completions.append(step.text)
            out.append(label)
            if not label:
                break  # steps after the first error are not judged (as in PRM800K)
        if not completions:
            continue
        yield {
            # TRL's stepwise-supervision type is standard (plain text) only, as in trl-lib/prm800k
            # and trl-lib/math_shepherd: the prompt is the text of the non-assistant turns.
            "prompt": "\n\n".join(m["content"] for m in _prompt_messages(prompt) if m["role"] != "assistant"),
            "completions": completions,
            "labels": out,
            **ctx.base(prompt, [trace], annotators),
        }


def _unpaired(ctx: _Ctx) -> Iterator[Record]:
    corpus = ctx.corpus
    for trace in corpus.traces:
        if trace.answer is None:
            continue
        prompt = ctx.prompt_of(trace)
        if prompt is None:
            continue
        verdict = _verdict(trace)
        corrections = corpus.corrections_of(trace.id)
        if verdict == "accept":
            label = True
            annotators = [r.annotator for r in trace.reviews if r.verdict == "accept"]
        elif verdict == "reject" or (verdict is None and corrections):
            label = False
            annotators = [r.annotator for r in trace.reviews if r.verdict == "reject"]
            annotators += [c.author for c in corrections]
        else:
            continue
        yield {
            "prompt": _prompt_messages(prompt),
            "completion": [{"role": "assistant", "content": _completion(trace)}],
            "label": label,
            **ctx.base(prompt, [trace], annotators),
        }


def _verifier(attr: str, scores: dict[str, float]) -> Callable[[_Ctx], Iterator[Record]]:
    """Records of one verifier kind: its labels are the keys of ``scores`` (the shared vocabulary)."""

    def run(ctx: _Ctx) -> Iterator[Record]:
        for trace in ctx.corpus.traces:
            if trace.answer is None:
                continue
            prompt = ctx.prompt_of(trace)
            if prompt is None:
                continue
            given = [(r.annotator, getattr(r, attr)) for r in trace.reviews if getattr(r, attr) in scores]
            adjudicated = getattr(trace.adjudication, attr, None) if trace.adjudication else None
            label = adjudicated if adjudicated in scores else _consensus([v for _, v in given])
            if label is None:
                continue  # unlabelled, or no majority and no adjudication
            if attr == "knowledge_label" and prompt.reference is None:
                continue  # true/false is judged against a reference answer
            yield {
                "prompt": _prompt_messages(prompt),
                "response": _completion(trace),
                "label": label,
                "score": scores[label],
                "reference": prompt.reference,
                "annotator_count": len(given),
                "agreeing_count": sum(1 for _, v in given if v == label),
                "adjudicated": adjudicated in scores,
                **ctx.base(
                    prompt,
                    [trace],
                    [who for who, v in given if v == label]
                    + ([trace.adjudication.annotator] if adjudicated in scores else []),
                ),
            }

    return run


def _rl_prompts(ctx: _Ctx) -> Iterator[Record]:
    for prompt in ctx.corpus.prompts:
        if prompt.images and not ctx.with_images:
            continue
        yield {
            "prompt": [m for m in _prompt_messages(prompt) if m["role"] != "assistant"],
            "reference": prompt.reference,
            **ctx.base(prompt, [], []),
        }


_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}


def _sharegpt(ctx: _Ctx) -> Iterator[Record]:
    for prompt, trace, completion, annotators in _accepted(ctx):
        conversations = []
        placed = False
        for m in _prompt_messages(prompt):
            value = m["content"]
            if m["role"] == "user" and not placed and prompt.images:
                # LLaVA-style code replaces each <image> token with the image features.
                value = "<image>\n" * len(prompt.images) + value
                placed = True
            conversations.append({"from": _SHAREGPT_ROLE[m["role"]], "value": value})
        conversations.append({"from": "gpt", "value": completion})
        rec: Record = {"id": str(trace.id), "conversations": conversations}
        if ctx.with_images:
            # LLaVA reads one file name per sample in `image`; several images go as a list in
            # `images` (kept by base()).
            rec["image"] = prompt.images[0] if prompt.images else None
        yield {**rec, **ctx.base(prompt, [trace], annotators)}


_RUNNERS: dict[str, Callable[[_Ctx], Iterator[Record]]] = {
    "sft": _sft,
    "sft_prompt_completion": _sft_prompt_completion,
    "preference": _preference,
    "preference_step": _preference_step,
    "stepwise": _stepwise,
    "unpaired": _unpaired,
    "verifier_safety": _verifier("safety_label", SAFETY_SCORES),
    "verifier_value": _verifier("value_label", VALUE_SCORES),
    "verifier_knowledge": _verifier("knowledge_label", KNOWLEDGE_SCORES),
    "rl_prompts": _rl_prompts,
    "sharegpt": _sharegpt,
}


def materialise(
    kind: str, corpus: Corpus, *, images: bool | None = None, redundant_steps: str = "keep"
) -> Iterator[Record]:
    """Yield the records of ``kind`` for ``corpus``, lazily and in a fixed order.

    ``images``: None (default) adds an ``images`` column exactly when the corpus has an image
    prompt; False leaves image prompts out (for a text-only model); True always adds the column.
    ``redundant_steps`` (``REDUNDANT_STEPS``) applies to the SFT kinds (sft, sft_prompt_completion,
    sharegpt), which imitate a whole chain: ``drop`` leaves the steps rated 0 out of the completion,
    ``exclude`` leaves out the record of a trace with such a step. The other kinds learn from the
    chain as it was judged (a pair, a verdict, per-step labels), so they ignore it.
    """
    if kind not in _RUNNERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    if redundant_steps not in REDUNDANT_STEPS:
        raise ValueError(f"redundant_steps must be one of {', '.join(REDUNDANT_STEPS)}, not {redundant_steps!r}")
    return _RUNNERS[kind](_Ctx(corpus, images, redundant_steps))


def materialise_chunks(
    kind: str, chunks: Iterable[Corpus], *, images: bool, redundant_steps: str = "keep"
) -> Iterator[Record]:
    """``materialise`` of each corpus chunk in turn (``corpus.CorpusStream``): the records of the
    whole corpus, one chunk in memory at a time. ``images`` must be decided for the whole corpus
    (the filter's value, or ``CorpusStream.has_images()``): a chunk alone would decide it wrongly."""
    for corpus in chunks:
        yield from materialise(kind, corpus, images=images, redundant_steps=redundant_steps)


# ---------------------------------------------------------------------------------------------
# Arrow schemas: one per kind, so a Parquet writer never guesses a type from a batch of nulls.

_MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_STRS = pa.list_(pa.string())
_PROVENANCE = [
    ("prompt_id", pa.string()),
    ("category", pa.string()),
    ("trace_ids", _STRS),
    ("annotators", _STRS),
    ("model_version", pa.string()),
]
_FIELDS: dict[str, list[tuple[str, pa.DataType]]] = {
    "sft": [("messages", _MSG)],
    "sft_prompt_completion": [("prompt", _MSG), ("completion", _MSG)],
    "preference": [("prompt", _MSG), ("chosen", _MSG), ("rejected", _MSG), ("source", pa.string())],
    "preference_step": [("prompt", _MSG), ("chosen", _MSG), ("rejected", _MSG), ("step_index", pa.int64()),
                        ("source", pa.string())],
    "stepwise": [("prompt", pa.string()), ("completions", _STRS), ("labels", pa.list_(pa.bool_()))],
    "unpaired": [("prompt", _MSG), ("completion", _MSG), ("label", pa.bool_())],
    "rl_prompts": [("prompt", _MSG), ("reference", pa.string())],
    "sharegpt": [
        ("id", pa.string()),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
    ],
}
for _k in ("verifier_safety", "verifier_value", "verifier_knowledge"):
    _FIELDS[_k] = [
        ("prompt", _MSG),
        ("response", pa.string()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("reference", pa.string()),
        ("annotator_count", pa.int64()),
        ("agreeing_count", pa.int64()),
        ("adjudicated", pa.bool_()),
    ]


def arrow_schema(kind: str, *, with_images: bool, with_split: bool = False) -> pa.Schema:
    """The Arrow schema of ``kind``'s records (column order as materialise yields them).

    ``with_split`` appends the ``split`` column ("train" or "eval") that ``writers.with_split``
    adds last to every record of a snapshot file."""
    fields = list(_FIELDS[kind])
    if with_images and kind == "sharegpt":
        fields.append(("image", pa.string()))
    if with_images:
        fields.append(("images", _STRS))
    return pa.schema(fields + _PROVENANCE + ([("split", pa.string())] if with_split else []))
