"""What identifies a measurement: the model's function (tree, code, attributes, tensors), hashed where
the weights live; the tokenizer, corpus and settings; the size facts counted in the same pass.

Imports nothing of measure/, judge/, keep/ or report/.
"""
