"""Command-line tools (tokenizer, generate, compare, benchmark, convert)."""
