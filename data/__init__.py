"""Dataset definitions: long-tailed sources that the input pipeline turns into batches."""
