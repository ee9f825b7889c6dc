"""Readers of external datasets (PhraseCut, SA-1B, Open Images, image folders, keypoint datasets): files in, records out.

A reader knows one format field for field and nothing of pairs, models or shards; a bad record comes back
as a counted :class:`ieiw.schemas.units.Failure` that names the file and the record.
"""
