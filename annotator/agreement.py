"""How far annotators agree: plain data in, plain numbers out (no Django; annotator.selectors reads
the rows).

- **Krippendorff's alpha** over all annotators of a label family, from the maintained
  ``krippendorff`` package (numpy only). Tested against Krippendorff's own worked example.
- **Cohen's kappa** per pair of annotators, and of each annotator against the consensus of the
  *others* (leave-one-out, so nobody agrees with themselves). Written here: it is a few lines, and
  the library that has it (scikit-learn) would bring scipy, about 100 MB installed, for this one
  function. Tested against a published worked example.
- **Gold accuracy:** the share of an annotator's labels on gold items that match the known answer.
- **Over time:** alpha per period (day or week), each item counted in the period of its last label.

Labels of one family are *ratings*: (item, annotator, value, when). An item is a trace for the
review families and a (trace, step) pair for step ratings. Unsure / blank labels are not ratings.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from typing import Any

import krippendorff
import numpy as np

Item = Hashable


@dataclass(frozen=True)
class Rating:
    item: Item
    annotator: str
    value: Any
    when: datetime | None = None


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def krippendorff_alpha(ratings: Iterable[Rating], *, level: str = "nominal") -> float | None:
    """Alpha over every annotator, or None when no item has two ratings or values never vary."""
    ratings = list(ratings)
    annotators = sorted({r.annotator for r in ratings})
    by_item: dict[Item, dict[str, Any]] = defaultdict(dict)
    for r in ratings:
        by_item[r.item][r.annotator] = r.value
    items = [i for i, rs in by_item.items() if len(rs) >= 2]
    if not items:
        return None
    values = sorted({v for i in items for v in by_item[i].values()}, key=repr)
    if len(values) < 2:
        return None  # everyone gave the same value everywhere: alpha is undefined (0/0)
    numeric = level != "nominal" and all(isinstance(v, int | float) for v in values)
    code = {v: (float(v) if numeric else float(k)) for k, v in enumerate(values)}
    data = np.full((len(annotators), len(items)), np.nan)
    row = {a: k for k, a in enumerate(annotators)}
    for col, item in enumerate(items):
        for who, value in by_item[item].items():
            data[row[who], col] = code[value]
    domain = np.array(sorted(set(code.values())))
    return _clean(krippendorff.alpha(reliability_data=data, level_of_measurement=level if numeric else "nominal",
                                     value_domain=domain))


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's (unweighted) kappa of two raters' labels on the same items; None when undefined
    (no items, or both raters always chose one and the same label: chance agreement is 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if expected == 1:
        return None
    return _clean((observed - expected) / (1 - expected))


def _period(when: datetime | None, bucket: str) -> str | None:
    if when is None:
        return None
    day = when.date()
    if bucket == "week":
        day = day - timedelta(days=day.weekday())  # weeks start on Monday
    return day.isoformat()


def _consensus(values: list[Any]) -> Any:
    """The strict majority value, or None (no majority, or nothing to go on)."""
    if not values:
        return None
    value, count = Counter(values).most_common(1)[0]
    return value if count * 2 > len(values) else None


def family_report(
    ratings: Iterable[Rating],
    *,
    level: str = "nominal",
    gold: dict[Item, Any] | None = None,
    bucket: str = "week",
    min_pair_items: int = 2,
) -> dict[str, Any]:
    """Agreement of one label family: alpha, kappa per pair and per annotator against the others'
    consensus, gold accuracy per annotator, and alpha per period."""
    ratings = list(ratings)
    gold = gold or {}
    by_item: dict[Item, dict[str, Rating]] = defaultdict(dict)
    for r in ratings:
        by_item[r.item][r.annotator] = r
    annotators = sorted({r.annotator for r in ratings})
    shared = {i: rs for i, rs in by_item.items() if len(rs) >= 2}

    pairs = []
    for x, y in combinations(annotators, 2):
        both = [rs for rs in shared.values() if x in rs and y in rs]
        if len(both) < min_pair_items:
            continue
        a, b = [rs[x].value for rs in both], [rs[y].value for rs in both]
        pairs.append({
            "a": x, "b": y, "items": len(both), "kappa": cohen_kappa(a, b),
            "agreement": _clean(sum(p == q for p, q in zip(a, b, strict=True)) / len(both)),
        })

    people = []
    for who in annotators:
        mine, theirs = [], []
        for rs in shared.values():
            if who not in rs:
                continue
            others = _consensus([r.value for name, r in rs.items() if name != who])
            if others is not None:
                mine.append(rs[who].value)
                theirs.append(others)
        golden = [(r.value, gold[item]) for item, rs in by_item.items() if item in gold
                  for name, r in rs.items() if name == who]
        people.append({
            "annotator": who,
            "labels": sum(1 for rs in by_item.values() if who in rs),
            "consensus_items": len(mine),
            "kappa_vs_consensus": cohen_kappa(mine, theirs) if mine else None,
            "agreement_vs_consensus": _clean(sum(p == q for p, q in zip(mine, theirs, strict=True)) / len(mine))
            if mine else None,
            "gold_items": len(golden),
            "gold_accuracy": _clean(sum(v == g for v, g in golden) / len(golden)) if golden else None,
        })

    periods: dict[str, list[Rating]] = defaultdict(list)
    for rs in shared.values():
        whens = [r.when for r in rs.values() if r.when is not None]
        period = _period(max(whens), bucket) if whens else None
        if period is not None:
            periods[period].extend(rs.values())
    over_time = [
        {"period": p, "items": len({r.item for r in rs}), "alpha": krippendorff_alpha(rs, level=level)}
        for p, rs in sorted(periods.items())
    ]
    return {
        "level": level,
        "items": len(shared),
        "labelled_items": len(by_item),
        "annotators": annotators,
        "alpha": krippendorff_alpha([r for rs in shared.values() for r in rs.values()], level=level),
        "pairs": pairs,
        "per_annotator": people,
        "over_time": over_time,
    }


def median(values: Iterable[float | None]) -> float | None:
    given = [v for v in values if v is not None]
    return _clean(statistics.median(given)) if given else None
