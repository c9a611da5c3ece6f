"""Human-written dates in several languages and their ISO form, from babel's locale data.

Each example is a date written the way a locale writes it, e.g. ::

    "samedi 21 novembre 2026"      (fr_FR, full)   ->  "2026-11-21"
    "21. November 2026"            (de_DE, long)   ->  "2026-11-21"
    "Nov 21, 2026"                 (en_US, medium) ->  "2026-11-21"

The source strings come from ``babel.dates.format_date`` with babel's CLDR data, which
ships inside the babel wheel (nothing is downloaded). Only the ``full``, ``long`` and
``medium`` formats are used: ``short`` formats are numeric and ambiguous across locales
(``11/12/26``), so no model could learn them from the string alone.

The split is by date: a held-out date never appears in training in any language or
format, so the test measures whether the model reads dates, not whether it remembers them.

Example:
    >>> sources, targets = date_pairs([datetime.date(2026, 11, 21)], locales=("fr_FR",), formats=("full",))
    >>> sources, targets
    (['samedi 21 novembre 2026'], ['2026-11-21'])
"""
from __future__ import annotations

import datetime
from typing import NamedTuple, Sequence

import numpy as np

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_BR", "nl_NL")
FORMATS = ("full", "long", "medium")
FIRST_DATE, LAST_DATE = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)


class DateSplit(NamedTuple):
    """Parallel lists of source strings and ISO targets, one pair per (date, locale, format)."""

    train_sources: list[str]
    train_targets: list[str]
    test_sources: list[str]
    test_targets: list[str]


def date_pairs(dates: Sequence[datetime.date], *, locales: Sequence[str] = LOCALES,
               formats: Sequence[str] = FORMATS) -> tuple[list[str], list[str]]:
    """Every date written in every locale and format, with its ISO date as the target."""
    from babel.dates import format_date  # imported here: only the experiments need babel

    for fmt in formats:
        if fmt not in ("full", "long", "medium", "short"):
            raise ValueError(f"date_pairs: expected formats among 'full', 'long', 'medium', 'short', got {fmt!r}")
    sources, targets = [], []
    for date in dates:
        for locale in locales:
            for fmt in formats:
                sources.append(format_date(date, format=fmt, locale=locale))
                targets.append(date.isoformat())
    return sources, targets


def random_dates(count: int, rng: np.random.Generator, first: datetime.date = FIRST_DATE,
                 last: datetime.date = LAST_DATE) -> list[datetime.date]:
    """``count`` distinct dates drawn uniformly from ``[first, last]``."""
    span = (last - first).days + 1
    if not 0 < count <= span:
        raise ValueError(f"random_dates: expected a count in [1, {span}] (days from {first} to {last}), got {count}")
    offsets = rng.choice(span, size=count, replace=False)
    return [first + datetime.timedelta(days=int(offset)) for offset in offsets]


def make_split(num_train_dates: int, num_test_dates: int, seed: int, *, locales: Sequence[str] = LOCALES,
               formats: Sequence[str] = FORMATS) -> DateSplit:
    """Disjoint train and test dates (drawn with ``seed``), each written in every locale and format.

    The training pairs are shuffled (with ``seed``); the test pairs keep date-major order.
    """
    rng = np.random.default_rng(seed)
    dates = random_dates(num_train_dates + num_test_dates, rng)
    train_sources, train_targets = date_pairs(dates[:num_train_dates], locales=locales, formats=formats)
    test_sources, test_targets = date_pairs(dates[num_train_dates:], locales=locales, formats=formats)
    order = rng.permutation(len(train_sources))
    return DateSplit([train_sources[i] for i in order], [train_targets[i] for i in order], test_sources, test_targets)
