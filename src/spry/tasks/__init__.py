"""Task heads (spry.tasks.heads: one interface, the registry HEADS): the pooled classifier,
the verbalizer (a causal LM read as a classifier), SQuAD v2's span and generative heads,
and their metrics."""
