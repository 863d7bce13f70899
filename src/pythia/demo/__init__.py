"""`pythia demo`: a built-in corpus from Python's standard library (corpus.py) and the
end-to-end study on it (pipeline.py): tokenizer, tokens, order, suite, report."""
