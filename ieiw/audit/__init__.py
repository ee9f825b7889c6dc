"""The human audit of a finished build (``ieiw audit``, docs/audit.md): a stratified, seeded sample
(:mod:`ieiw.audit.sample`), a local labelling page (:mod:`ieiw.audit.server`) and the measured precision and
recall of the filters, per task and per rule, with Wilson intervals (:mod:`ieiw.audit.metrics`)."""
