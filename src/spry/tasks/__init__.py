"""Task-specific pieces beyond sequence classification: the verbalizer (a causal LM read as a
classifier), MultiRC, and the SQuAD v2 metrics."""
