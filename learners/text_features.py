"""Text without a neural backbone: River's BagOfWords or TFIDF turn an event's ``text`` into features a River
head learns from (naive Bayes, linear models, trees), as River's own text pipelines do.

Terms are bounded like feature names (`FeaturePrep`'s ``max_features``: terms first seen once that many are
known are left out and counted); TF-IDF's document frequencies count admitted terms only, so its state is
bounded too. n-grams are joined with a space (``"new york"``). Counts and TF-IDF weights are not scaled.
"""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

from driftline.errors import ConfigError
from driftline.learners.config import TextFeatureSettings
from driftline.learners.preprocessing import FeaturePrep

# constructor parameters that take Python callables or name a column: not settable from a config
_FIXED = {"on", "tokenizer", "preprocessor"}


def _term(t: Any) -> str:
    return " ".join(t) if isinstance(t, tuple) else str(t)


class TextFeaturizer:
    """``text`` -> ``{term: count}`` (BagOfWords) or ``{term: tf-idf}`` (TFIDF), within a bounded vocabulary."""

    def __init__(self, cfg: TextFeatureSettings, max_terms: int | None) -> None:
        from river import feature_extraction

        cls = getattr(feature_extraction, cfg.kind)
        accepted = set(inspect.signature(cls).parameters) - _FIXED
        params: dict[str, Any] = {}
        for key, value in cfg.params.items():
            if key not in accepted:
                raise ConfigError(f"model.text_features.params.{key}: {cfg.kind} has no settable parameter {key!r}; "
                                  f"accepted: {', '.join(sorted(accepted))}")
            params[key] = tuple(value) if key == "ngram_range" else set(value) if key == "stop_words" else value
        try:
            self.vectorizer: Any = cls(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.text_features: {cfg.kind}({params!r}) failed: {exc}") from None
        self.tfidf = cfg.kind == "TFIDF"
        self.vocabulary = FeaturePrep(scale=False, one_hot=False, max_features=max_terms)

    @property
    def dropped(self) -> int:
        return self.vocabulary.dropped

    def bound(self, max_terms: int | None) -> None:
        self.vocabulary.bound(max_terms)

    def _counts(self, text: str) -> dict[str, float]:
        return {_term(t): float(n) for t, n in Counter(self.vectorizer.process_text(text)).items()}

    def transform(self, text: str) -> dict[str, float]:
        """The text's features (nothing learned)."""
        if not self.tfidf:
            return self.vocabulary.transform_one(self._counts(text))
        return self.vocabulary.transform_one({_term(t): w for t, w in self.vectorizer.transform_one(text).items()})

    def learn_transform(self, text: str) -> dict[str, float]:
        """Admit the text's terms (within the bound), count the document (TF-IDF), then its features."""
        kept = self.vocabulary.learn_transform_one(self._counts(text))
        if not self.tfidf:
            return kept
        self.vectorizer.dfs.update(kept.keys())
        self.vectorizer.n += 1
        return {term: w for t, w in self.vectorizer.transform_one(text).items() if (term := _term(t)) in kept}
