"""Runtime control (issue #13 item 5): register tiers, route workloads, canary, promote and roll
back while the gateway runs. ``store`` keeps the state in the ledger database; ``reloader``
polls its version on every replica and applies changes without a restart."""
