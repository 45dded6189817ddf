"""``ComplexityRouter`` keeps scikit-learn's estimator contract.

Why it matters here: ``router train`` and the benchmarks ``clone`` the estimator for
ablations and cross-validation, and skops saves exactly the parameters ``get_params``
reports. An estimator that validates or rewrites parameters in ``__init__``, hides state
outside its parameters, or answers before ``fit`` would break those silently.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from router import ComplexityRouter

PROMPTS = ["What is 2 + 2?", "Explain the causes of the French Revolution in detail."]


def test_passes_sklearn_parameter_checks() -> None:
    est = ComplexityRouter(word_max_features=1000, cv=3, domain_head=True)
    name = type(est).__name__
    check_no_attributes_set_in_init(name, est)
    check_parameters_default_constructible(name, est)
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    assert is_classifier(est)


def test_get_params_set_params_round_trip() -> None:
    est = ComplexityRouter()
    params = est.get_params()
    assert params["target"] == "outcomes" and params["C"] == 0.2
    assert est.set_params(C=0.5, target="gap", cv=4) is est
    assert est.get_params() == {**params, "C": 0.5, "target": "gap", "cv": 4}
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_parameter=1)


def test_bad_parameters_fail_in_fit_not_in_init(sample) -> None:
    est = ComplexityRouter(target="no-such-target")  # sklearn: __init__ stores, fit validates
    assert est.get_params()["target"] == "no-such-target"
    with pytest.raises(ValueError, match="target must be one of"):
        est.fit(sample.train.prompts[:50], sample.train.outcomes[:50])


@pytest.mark.parametrize("method", ["predict_proba", "predict", "meta_features", "threshold_for"])
def test_not_fitted_error_before_fit(method: str) -> None:
    est = ComplexityRouter()
    args = (0.3,) if method == "threshold_for" else (PROMPTS,)
    with pytest.raises(NotFittedError):
        getattr(est, method)(*args)


def test_clone_of_fitted_is_unfitted_with_same_params(fitted: ComplexityRouter) -> None:
    copy = clone(fitted)
    assert copy is not fitted
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "calibrator_")
    with pytest.raises(NotFittedError):
        copy.predict_proba(PROMPTS)


def test_clone_refit_reproduces_the_model(sample, fitted: ComplexityRouter) -> None:
    """Parameters (with ``random_state``) are the whole recipe: a clone refitted on the same
    data scores exactly like the original."""
    n = 400
    X, y, domains = sample.train.prompts[:n], sample.train.outcomes[:n], sample.train.domains[:n]
    # the session's router made smaller still: two fits must stay cheap next to the fixture's
    params = {**fitted.get_params(), "word_max_features": 1000, "char_max_features": 1000,
              "conversation_max_features": 300, "cv": 2, "meta_max_iter": 15, "meta_min_samples_leaf": 20}
    original = ComplexityRouter(**params).fit(X, y, domains=domains)
    refit = clone(original).fit(X, y, domains=domains)
    test = sample.test.prompts[:200]
    np.testing.assert_array_equal(original.predict_proba(test), refit.predict_proba(test))
    assert not np.allclose(original.predict_proba(test)[:, 1], original.predict_proba(test)[0, 1])
