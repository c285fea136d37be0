"""Judging a result: the verdict against the budget, the record and the size guard, the statistics it
rests on, the windows that lost most, and the records of every call.

Imports identity/ and measure/; never keep/ or report/.
"""
