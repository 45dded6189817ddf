"""Small pieces that ``gateway``, ``router`` and ``distill`` all need and none of them owns.

Why a package of its own: ``router`` and ``distill`` must never import ``gateway``, and
importing ``router`` pulls scikit-learn while ``distill`` pulls torch; a metric or a path
lookup shared by all three would drag one of those into the others. This package imports
only the standard library.

* :mod:`tierwise_common.data_dir`: where the shared data sets live, and the one error for
  "not there".
* :mod:`tierwise_common.text_metrics`: ROUGE-L with one tokenisation, so the gateway's live
  agreement and distillation's offline agreement are the same metric.
"""
