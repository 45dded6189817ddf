"""Building the configured routing chain: competence gate -> router -> cascade.

Kept apart from ``policy.py`` (the decision types and the basic policies) because the gate and
the cascade build on those types: assembling the chain here keeps the routing package free of
import cycles.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.config import RouterConfig
from gateway.routing.cascade_policy import CascadePolicy, load_cascade
from gateway.routing.competence_gate import load_gate_index, with_competence_gate
from gateway.routing.outcome import OutcomePolicy, OutcomeScorer
from gateway.routing.policy import FixedPolicy, RoutingPolicy, ThresholdPolicy

log = logging.getLogger("gateway.routing")


def build_policy(config: RouterConfig) -> RoutingPolicy:
    """The configured chain: competence gate (if configured) -> router -> cascade (if configured).

    The cascade stage marks weak-tier decisions (``+cascade``, ``decision.cascade``); the
    serving code runs them through that ``gateway.routing.cascade.Cascade``.
    """
    index = load_gate_index(config)  # one index for the gate and the outcome router's distance feature
    policy = _router_policy(config, index)
    if config.cascade is not None:
        cascade = load_cascade(config.cascade.artifact, config.cascade.threshold, config.cascade.decision_tokens)
        policy = CascadePolicy(policy, config.weak_tier, cascade)
    return with_competence_gate(policy, config, index)


def _router_policy(config: RouterConfig, index=None) -> RoutingPolicy:
    """The trained or fixed policy; a missing artifact degrades to FixedPolicy, loudly.

    An artifact that exists but is refused (tampered, foreign types) stops the start-up: an
    operator who configured a router should not silently get another one.
    """
    if config.policy == "cascade":  # no router in front: every request the gate lets through is cascaded
        return FixedPolicy(config.weak_tier)
    fixed = FixedPolicy(config.default_tier or config.strong_tier)
    if config.policy == "fixed":
        log.info("routing policy: fixed, every `auto` request goes to tier %s", fixed.tier)
        return fixed
    if not config.artifact or not Path(config.artifact).exists():
        log.warning("routing policy: no trained router at %s; every `auto` request goes to tier %s",
                    config.artifact, fixed.tier)
        return fixed
    if config.policy == "outcome":
        return _outcome_policy(config, index, fixed)
    from router import load_router  # scikit-learn + skops: seconds of import, only when a router is configured

    scorer = load_router(config.artifact)
    policy = ThresholdPolicy(scorer, config.strong_tier, config.weak_tier, config.threshold)
    log.info("routing policy: trained router %s, threshold %.3f (>= goes to %s, else %s)",
             config.artifact, policy.threshold, config.strong_tier, config.weak_tier)
    return policy


def _outcome_policy(config: RouterConfig, index, fixed: FixedPolicy) -> RoutingPolicy:
    """The router on our own outcomes; it reads the gate's competence index for its distance feature."""
    if index is None:  # the index file is missing (warned about): no distance, no outcome router
        log.warning("routing policy: the outcome router needs the competence index; every `auto` request goes to "
                    "tier %s", fixed.tier)
        return fixed
    from router.outcome_router import load_outcome_router
    from router.signed import stored_digest

    loaded = load_outcome_router(config.artifact)
    trained_on = loaded.metadata.get("competence_sha256")
    # The index was loaded (and its digest checked) by the gate: its stored digest is its content's.
    if trained_on and config.competence and trained_on != stored_digest(config.competence.artifact):
        log.warning("routing policy: %s learned from another competence index than %s; its distances may not "
                    "mean what it learned", config.artifact, config.competence.artifact)
    scorer = OutcomeScorer(loaded.model, index, loaded.threshold)
    policy = OutcomePolicy(scorer, config.strong_tier, config.weak_tier,
                           None if config.threshold is None else 1.0 - config.threshold)
    log.info("routing policy: outcome router %s, P(agree) < %.3f goes to %s, else %s",
             config.artifact, 1.0 - policy.threshold, config.strong_tier, config.weak_tier)
    return policy
