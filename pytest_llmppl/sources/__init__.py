"""Where a fixture call's result comes from: one ordered chain of sources (the committed file,
this process's memory, the local store), then a forward; and the dense model's reference a check's
KL divergence is measured against.  Strict mode, ``--ppl-remeasure``, ``--ppl-no-cache`` and a
refresh are choices of which sources are in the chain (``chain.chain_for``).

Imports identity/, measure/, judge/ and keep/; never report/, and never pytest.
"""
