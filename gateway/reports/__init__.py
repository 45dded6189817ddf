"""Cost reports: the ledger, read by people (HTML, Markdown, CSV, JSON, plots).

``data`` reads the ledger into dataclasses; ``figures``, ``render_html``, ``render_text`` and
``export`` turn them into files; ``run`` ties them together for ``python -m gateway report``.
"""
