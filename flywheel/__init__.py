"""The flywheel (issue #13): from the gateway's own traffic to a cheaper student.

Sits above ``gateway``, ``router`` and ``distill`` and may import all three; none of them
imports it. Torch is never imported at import time (distillation runs as its own process).
"""
