"""Each export kind on a small hand-made corpus: the exact records a user gets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from annotator.datasets.materialise import KINDS, arrow_schema, materialise
from annotator.datasets.records import (
    AlternativePickRec,
    ComparisonRec,
    Corpus,
    CorrectionRec,
    PromptRec,
    ReviewRec,
    StepLabelRec,
    StepRec,
    TraceRec,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEPS = ["1. Six times seven.", "2. Six sevens are 6+6+6+6+6+6+6.", "3. That is 41.", "4. So 41."]
NEW_STEP = "3. That is 42."
IMAGE_PATH = "media/prompts/sign.png"
Q = [{"role": "user", "content": "What is 6*7?"}]
Q_IMG = [{"role": "user", "content": "Is this safe?"}]


PICKED = "2. 6 * 7 = 42."


def build_corpus(image_path: str = IMAGE_PATH, *, original_rating_step2: int | None = -1) -> Corpus:
    """P1 (text, knowledge): original T1 with 4 rated steps, rejected; correction at step 2 gives the
    accepted branch T2; T3 a finished sibling; a comparison prefers T2 over T3.
    P2 (image, safety): T4 accepted with a safety label."""
    p1 = PromptRec(id=1, messages=Q, category="knowledge", reference="42")
    p2 = PromptRec(
        id=2,
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this safe?"}]}],
        images=[image_path],
        category="safety",
    )
    t1 = TraceRec(
        id=10,
        prompt_id=1,
        model_version="m1",
        created_at=T0,
        answer="41",
        steps=[
            StepRec(0, STEPS[0], labels=[StepLabelRec("alice", 1)]),
            StepRec(1, STEPS[1], labels=[StepLabelRec("alice", 0), StepLabelRec("bob", 1)]),
            StepRec(2, STEPS[2], labels=[StepLabelRec("alice", original_rating_step2)]),
            StepRec(3, STEPS[3], labels=[StepLabelRec("alice", None)]),
        ],
        reviews=[
            ReviewRec(
                "alice", verdict="reject", safety_label="safe_without_risk", value_label="bad", knowledge_label="false"
            )
        ],
    )
    t2 = TraceRec(
        id=11,
        prompt_id=1,
        parent_id=10,
        branch_step_index=2,
        model_version="m1",
        created_at=T0 + timedelta(minutes=1),
        answer="42",
        steps=[
            StepRec(0, STEPS[0]),
            StepRec(1, STEPS[1]),
            StepRec(2, NEW_STEP, origin="human"),
            StepRec(3, "4. So 42."),
        ],
        reviews=[
            ReviewRec(
                "bob", verdict="accept", safety_label="safe_without_risk", value_label="good", knowledge_label="true"
            )
        ],
    )
    t3 = TraceRec(
        id=12,
        prompt_id=1,
        model_version="m1",
        created_at=T0 + timedelta(minutes=2),
        answer="40",
        steps=[StepRec(0, "1. Guess."), StepRec(1, "2. About 40.")],
    )
    t4 = TraceRec(
        id=13,
        prompt_id=2,
        model_version="m1",
        created_at=T0 + timedelta(minutes=3),
        answer="Yes, with care.",
        steps=[StepRec(0, "1. A wet-floor sign.")],
        reviews=[ReviewRec("alice", verdict="accept", safety_label="safe_with_warning")],
    )
    corr = CorrectionRec(
        id=1,
        original_trace_id=10,
        corrected_trace_id=11,
        step_index=2,
        old_text=STEPS[2],
        new_text=NEW_STEP,
        author="carol",
    )
    comp = ComparisonRec(id=1, preferred_trace_id=11, other_trace_id=12, annotator="dave")
    # Erin picked, among K candidates the model sampled for T3's step 1, one that none of the others equals.
    pick = AlternativePickRec(id=1, trace_id=12, step_index=1, chosen=PICKED, rejected=["2. About 40.", "2. 41?"],
                              author="erin", created_at=T0 + timedelta(minutes=4))
    # Given out of order on purpose: exports must not depend on the order rows arrive in.
    return Corpus(prompts=[p2, p1], traces=[t4, t3, t2, t1], corrections=[corr], comparisons=[comp], picks=[pick])


def completion(steps: list[str], answer: str | None) -> str:
    body = "\n".join(steps)
    return f"<think>\n{body}\n</think>\n{answer}" if answer is not None else f"<think>\n{body}\n"


T2_TEXT = completion([*STEPS[:2], NEW_STEP, "4. So 42."], "42")
T1_TEXT = completion(STEPS, "41")
T3_TEXT = completion(["1. Guess.", "2. About 40."], "40")
T4_TEXT = completion(["1. A wet-floor sign."], "Yes, with care.")


def prov(prompt_id: str, category: str, trace_ids: list[str], annotators: list[str], images: list[str]) -> dict:
    return {
        "images": images,
        "prompt_id": prompt_id,
        "category": category,
        "trace_ids": trace_ids,
        "annotators": annotators,
        "model_version": "m1",
    }


def asst(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_sft_exports_accepted_traces_with_the_corrected_branch_and_image_prompt() -> None:
    records = list(materialise("sft", build_corpus()))
    assert records == [
        {"messages": Q + asst(T2_TEXT), **prov("1", "knowledge", ["11"], ["bob"], [])},
        {"messages": Q_IMG + asst(T4_TEXT), **prov("2", "safety", ["13"], ["alice"], [IMAGE_PATH])},
    ]


def test_sft_prompt_completion_layout() -> None:
    records = list(materialise("sft_prompt_completion", build_corpus()))
    assert [(r["prompt"], r["completion"], r["trace_ids"]) for r in records] == [
        (Q, asst(T2_TEXT), ["11"]),
        (Q_IMG, asst(T4_TEXT), ["13"]),
    ]


def test_text_only_export_drops_image_prompts_and_the_images_column() -> None:
    records = list(materialise("sft", build_corpus(), images=False))
    assert len(records) == 1
    assert "images" not in records[0]
    assert records[0]["trace_ids"] == ["11"]


def test_preference_pairs_correction_and_comparison() -> None:
    records = list(materialise("preference", build_corpus()))
    assert records == [
        {
            "prompt": Q,
            "chosen": asst(T2_TEXT),
            "rejected": asst(T1_TEXT),
            "source": "correction",
            **prov("1", "knowledge", ["11", "10"], ["carol", "bob"], []),
        },
        {
            "prompt": Q,
            "chosen": asst(T2_TEXT),
            "rejected": asst(T3_TEXT),
            "source": "comparison",
            **prov("1", "knowledge", ["11", "12"], ["dave"], []),
        },
    ]


def test_preference_step_carries_the_shared_prefix_in_both_answers() -> None:
    records = list(materialise("preference_step", build_corpus()))
    assert records == [
        {
            "prompt": Q,
            "chosen": asst(completion([*STEPS[:2], NEW_STEP], None)),
            "rejected": asst(completion(STEPS[:3], None)),
            "step_index": 2,
            "source": "correction",
            **prov("1", "knowledge", ["11", "10"], ["carol"], []),
        },
        # The pick among alternatives: the picked step against each candidate not picked, same prefix.
        *[
            {
                "prompt": Q,
                "chosen": asst(completion(["1. Guess.", PICKED], None)),
                "rejected": asst(completion(["1. Guess.", rejected], None)),
                "step_index": 1,
                "source": "alternatives",
                **prov("1", "knowledge", ["12"], ["erin"], []),
            }
            for rejected in ["2. About 40.", "2. 41?"]
        ],
    ]


def test_stepwise_labels_from_ratings_and_corrections() -> None:
    records = {r["trace_ids"][0]: r for r in materialise("stepwise", build_corpus())}
    # T1: +1; 0 and +1 (neutral is not an error); -1 -> stop at the first wrong step.
    assert records["10"]["prompt"] == "What is 6*7?"  # TRL stepwise: standard (string) prompt
    assert records["10"]["completions"] == STEPS[:3]
    assert records["10"]["labels"] == [True, True, False]
    assert records["10"]["annotators"] == ["alice", "bob", "carol"]
    # T2 (branch): unrated, but the prefix and the human step are good; step 3 unjudged -> cut.
    assert records["11"]["completions"] == [*STEPS[:2], NEW_STEP]
    assert records["11"]["labels"] == [True, True, True]
    assert set(records) == {"10", "11"}  # T3/T4 have no step labels


def test_stepwise_correction_marks_the_edited_step_negative_even_when_rated_unsure() -> None:
    records = list(materialise("stepwise", build_corpus(original_rating_step2=None)))
    t1 = next(r for r in records if r["trace_ids"] == ["10"])
    assert t1["labels"] == [True, True, False]


def test_unpaired_labels_accepted_true_rejected_false() -> None:
    records = [(r["trace_ids"], r["label"], r["completion"]) for r in materialise("unpaired", build_corpus())]
    assert records == [(["10"], False, asst(T1_TEXT)), (["11"], True, asst(T2_TEXT)), (["13"], True, asst(T4_TEXT))]


def test_verifier_safety_carries_label_and_safework_score() -> None:
    records = list(materialise("verifier_safety", build_corpus()))
    assert [(r["trace_ids"], r["label"], r["score"]) for r in records] == [
        (["10"], "safe_without_risk", 1.0),
        (["11"], "safe_without_risk", 1.0),
        (["13"], "safe_with_warning", 1.0),
    ]
    assert records[0]["response"] == T1_TEXT
    assert records[0]["prompt"] == Q


def test_verifier_value_and_knowledge() -> None:
    value = [(r["trace_ids"], r["label"], r["score"]) for r in materialise("verifier_value", build_corpus())]
    assert value == [(["10"], "bad", 0.0), (["11"], "good", 1.0)]
    knowledge = list(materialise("verifier_knowledge", build_corpus()))
    assert [(r["label"], r["score"], r["reference"]) for r in knowledge] == [("false", 0.0, "42"), ("true", 1.0, "42")]


def test_verifier_skips_disagreeing_reviewers() -> None:
    corpus = build_corpus()
    t4 = corpus.trace(13)
    disputed = replace(t4, reviews=[*t4.reviews, ReviewRec("bob", safety_label="unsafe")])
    corpus = Corpus(prompts=corpus.prompts, traces=[*corpus.traces[:-1], disputed])
    assert [r["trace_ids"] for r in materialise("verifier_safety", corpus)] == [["10"], ["11"]]


def test_rl_prompts_one_per_prompt() -> None:
    records = list(materialise("rl_prompts", build_corpus()))
    assert records == [
        {
            "prompt": Q,
            "reference": "42",
            "images": [],
            "prompt_id": "1",
            "category": "knowledge",
            "trace_ids": [],
            "annotators": [],
            "model_version": None,
        },
        {
            "prompt": Q_IMG,
            "reference": None,
            "images": [IMAGE_PATH],
            "prompt_id": "2",
            "category": "safety",
            "trace_ids": [],
            "annotators": [],
            "model_version": None,
        },
    ]


def test_sharegpt_conversations_with_image_placeholder() -> None:
    records = list(materialise("sharegpt", build_corpus()))
    assert [(r["id"], r["conversations"], r["image"]) for r in records] == [
        ("11", [{"from": "human", "value": "What is 6*7?"}, {"from": "gpt", "value": T2_TEXT}], None),
        ("13", [{"from": "human", "value": "<image>\nIs this safe?"}, {"from": "gpt", "value": T4_TEXT}], IMAGE_PATH),
    ]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_stable_columns_matching_its_schema(kind: str) -> None:
    records = list(materialise(kind, build_corpus()))
    assert records, kind
    names = set(arrow_schema(kind, with_images=True).names)
    assert all(set(r) == names for r in records)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_empty_corpus_gives_no_records(kind: str) -> None:
    assert list(materialise(kind, Corpus())) == []


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        materialise("nope", Corpus())


def test_image_path_is_kept_as_given(tmp_path: Path) -> None:
    path = str(tmp_path / "x.png")
    assert next(iter(materialise("rl_prompts", build_corpus(path), images=True)))["images"] == []
    assert list(materialise("rl_prompts", build_corpus(path)))[1]["images"] == [path]
