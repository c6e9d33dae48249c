"""What a search leaves behind: the SearchResult (result.py), what reruns it (provenance.py:
versions, weight hashes, strict JSON) and the files it is written to (files.py: checked
paths, atomic writes, the sidecar rule)."""
