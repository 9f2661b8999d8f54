"""The scoring pipeline: image decoding, the prepare and infer stages, the local engine, the
feature cache, fusion, resumable runs and the result table."""
