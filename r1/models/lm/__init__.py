"""Language-model family: R1-LM and the plain GPT baseline."""
