"""Keeping results: atomic files, the content-addressed store, results in it, the committed file, a
shard's changes to it and their merge.

Imports identity/, measure/ and judge/; never report/, and never pytest.
"""
