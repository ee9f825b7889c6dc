"""Every registered CandidateBuilder except the crawl's: removal, replacement, and the multi-task converters.

A builder reads its source (:mod:`ieiw.sources`), calls its backends (:mod:`ieiw.backends`) and returns pair
rows of the schema (:mod:`ieiw.schemas.rows`) for one work unit at a time; it never writes the kept or
rejected folders (selection does). Its instruction templates live beside it (``templates/``,
:mod:`ieiw.builders.instructions`).
"""
