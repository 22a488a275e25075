"""Training: corpus, tokenizer, input pipeline, objectives, sharding, train loop."""
