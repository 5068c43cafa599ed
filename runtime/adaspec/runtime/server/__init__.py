"""`adaspec serve`: the OpenAI-compatible serving process of a runtime pod."""
