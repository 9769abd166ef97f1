"""Language-model family: R1-LM and the plain GPT baseline."""
from r1.models.lm import family, gpt, r1lm  # noqa: F401
