"""Fixtures: small real samples of RouteLLM's MMLU data and one router fitted on them.

The data live in ``<repo>/../shared/data`` (or ``$TIERWISE_DATA_DIR``). A missing data
folder fails the tests instead of skipping them (``support.shared_data``): a green run must
mean the router was actually fitted and checked on real outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from router import ComplexityRouter
from router.data import RoutingData, grouped_split, load_mmlu
from support.shared_data import shared_data

# Small vocabularies and 3 folds keep the fit to a few seconds on a 2-core CI machine; the
# optional domain head is switched on so that its fast path is covered too.
SMALL_PARAMS = dict(
    word_max_features=8000, char_max_features=8000, conversation_max_features=2000, cv=3, meta_max_iter=80, domain_head=True
)


@dataclass
class Sample:
    train: RoutingData
    test: RoutingData


@pytest.fixture(scope="session")
def mmlu() -> RoutingData:
    shared_data("routellm", "mmlu")
    return load_mmlu()


@pytest.fixture(scope="session")
def sample(mmlu: RoutingData) -> Sample:
    """4,000 train and 2,000 test prompts, grouped so no prompt is on both sides."""
    test_mask = grouped_split(mmlu.prompts, test_size=0.5, seed=0)
    rng = np.random.RandomState(0)
    train_idx = rng.choice(np.flatnonzero(~test_mask), 4000, replace=False)
    test_idx = rng.choice(np.flatnonzero(test_mask), 2000, replace=False)
    pick = lambda idx: mmlu.subset(np.isin(np.arange(len(mmlu)), idx))  # noqa: E731
    return Sample(train=pick(train_idx), test=pick(test_idx))


@pytest.fixture(scope="session")
def fitted(sample: Sample) -> ComplexityRouter:
    est = ComplexityRouter(**SMALL_PARAMS)
    return est.fit(sample.train.prompts, sample.train.outcomes, domains=sample.train.domains)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slower router tests (still run in CI)")
