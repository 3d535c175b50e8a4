"""Task-specific pieces beyond sequence classification: the verbalizer (a causal LM read as a
classifier), MultiRC, SQuAD v2 (an encoder's span head, or a decoder generating the answer)
and their metrics."""
