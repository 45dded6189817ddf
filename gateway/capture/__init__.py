"""Content capture for the flywheel (issue #13): teacher-served requests and answers, kept
redacted, sampled, capped and for a limited time, to distill the next student from.

``policy.CapturePolicy`` decides per request (opt-in per workload and per key, sample rate,
per-workload cap); ``store.CaptureStore`` redacts and writes in the background and purges
what is past its retention. A lower layer like ``ledger``: it never imports entrypoints or tiers.
"""
