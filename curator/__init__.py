"""curator: turn raw chat fine-tuning data into a dataset a team can trust.

`import curator` never imports torch, transformers or polars-heavy machinery: the
pre-commit hook (`curate validate`) depends on a fast start.
"""

__version__ = "0.1.0"
