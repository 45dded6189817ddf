"""The request-path engine shared by chat and text completions."""
