"""Groups inside sources: ``curate cluster`` embeds train rows and k-means clusters them into ``source/cNN``.

- :mod:`curate.cluster.embed`: the embedders (packaged all-MiniLM-L6-v2, a sentence-transformers folder, or the
  base LM's mean-pooled hidden states) and rows streamed from the store through them.
- :mod:`curate.cluster.kmeans`: spherical k-means and nearest-centroid assignment with FAISS.
- :mod:`curate.cluster.store`: the ``groups`` / ``groupings`` tables, the atomic replace, and what a consumer
  (``reweight --group-by NAME``) reads: :func:`~curate.cluster.store.group_of_sql`,
  :func:`~curate.cluster.store.grouping_settings`, :func:`~curate.cluster.store.is_current`.
- :mod:`curate.cluster.run`: :func:`~curate.cluster.run.prepare` (every check, read-only) and
  :func:`~curate.cluster.run.cluster` (the work).

Importing this package loads neither torch nor faiss; they are imported when a clustering runs
(``pip install 'curate[cluster]'``).
"""
